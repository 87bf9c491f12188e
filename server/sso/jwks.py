"""The signing keys of an OpenID provider (a Keycloak realm): discovered, fetched and cached.

The issuer's `/.well-known/openid-configuration` names its `jwks_uri`; the key set found there is
kept for `key_cache_ttl` seconds. A token signed with a key id we do not know makes us fetch the
set again (keys rotate), but the provider is asked at most once per `min_refetch_interval`
seconds whatever the reason, so a stream of made-up key ids, or a provider that is down, costs
one attempt per interval. Every attempt (discovery and key set together) ends within `timeout`,
and reads at most MAX_DOCUMENT bytes of each answer (once inflated).
"""

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp
import orjson
from jwt import PyJWK, PyJWKSet, PyJWTError

from server.config import KeycloakConfig
from server.proxies import request_options

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "ES256"})
# Bytes of one answer of the provider, once inflated: Keycloak's key sets and configuration are
# a few KB. Read whole and parsed on the event loop, 256 KiB of gzip took 3.5 GiB, and 20,000
# keys stopped every request for 0.4 s.
MAX_DOCUMENT = 1 << 20


class ProviderUnavailable(Exception):
    """No fresh key set: the provider could not be reached in time or sent something unusable."""


class UnknownKey(Exception):
    """The key set is fresh but has no key with this id."""


def signing_keys(jwks: Any) -> dict[str, PyJWK]:
    """The RS256/ES256 signature keys of a JWKS document, by key id; other keys are left out."""
    if not isinstance(jwks, dict):
        raise ValueError("the key set is not a JSON object")
    try:
        found = PyJWKSet.from_dict(jwks)  # skips keys PyJWT cannot use
    except TypeError as exc:  # PyJWT looks an unhashable "alg" (a list, an object) up as it is
        raise ValueError(f"the key set has an unusable key: {exc}") from None
    keys = {
        key.key_id: key
        for key in found
        if isinstance(key.key_id, str)
        and key.public_key_use in (None, "sig")
        and key.algorithm_name in ALGORITHMS
    }
    if not keys:
        raise ValueError("the key set has no RS256 or ES256 signature key with a key id")
    return keys


class ProviderKeys:
    """The realm's current signature keys, fetched through one shared HTTP session."""

    def __init__(self, session: aiohttp.ClientSession, settings: KeycloakConfig) -> None:
        self._session = session
        self._settings = settings
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = -math.inf  # time.monotonic() of the last successful fetch
        self._attempted_at = -math.inf  # ... and of the last attempt, successful or not
        self._ended_at = -math.inf  # ... and when that attempt ended
        self._jwks_uri: str | None = None  # discovered once
        self._lock = asyncio.Lock()  # one attempt at a time; the others wait for its result

    async def get(self, kid: str) -> PyJWK:
        """The key `kid`; UnknownKey or ProviderUnavailable when there is none to use."""
        key = self._cached(kid)
        if key is None:
            await self._refresh()
            key = self._cached(kid)
        if key is not None:
            return key
        if self._is_fresh():
            raise UnknownKey(kid)
        raise ProviderUnavailable()

    def _is_fresh(self) -> bool:
        return time.monotonic() - self._loaded_at < self._settings.key_cache_ttl

    def _cached(self, kid: str) -> PyJWK | None:
        return self._keys.get(kid) if self._is_fresh() else None

    async def _refresh(self) -> None:
        """Fetch the key set, unless the provider was asked less than an interval ago."""
        called = time.monotonic()
        async with self._lock:
            started = time.monotonic()
            if self._ended_at > called:
                return  # an attempt ended while we waited: its result is ours too
            if started - self._attempted_at < self._settings.min_refetch_interval:
                return  # asked recently
            self._attempted_at = started
            try:
                async with asyncio.timeout(self._settings.timeout):
                    keys = await self._fetch()
            except (TimeoutError, aiohttp.ClientError, ValueError, PyJWTError) as exc:
                log.warning("Keycloak signing keys not fetched: %s", _describe(exc))
                return
            finally:
                self._ended_at = time.monotonic()
            self._keys, self._loaded_at = keys, started
            log.info("Keycloak signing keys fetched: %s", ", ".join(sorted(keys)))

    async def _fetch(self) -> dict[str, PyJWK]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        return signing_keys(await self._get_json(self._jwks_uri))

    async def _discover(self) -> str:
        """The jwks_uri of the provider, whose configuration must name our issuer."""
        issuer = self._settings.issuer_url
        found = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        if not isinstance(found, dict) or found.get("issuer") != issuer:
            raise ValueError(f"the provider's configuration does not name the issuer {issuer}")
        jwks_uri = found.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the provider's configuration has no jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        async with self._session.get(url, **request_options(url)) as response:
            response.raise_for_status()
            body = bytearray()
            async for piece in response.content.iter_chunked(1 << 16):
                body += piece
                if len(body) > MAX_DOCUMENT:
                    raise ValueError(f"{url} answered more than {MAX_DOCUMENT} bytes")
            return orjson.loads(body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"
