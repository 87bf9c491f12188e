"""Keycloak access tokens: checked against the realm's keys and this server's rules.

A token is accepted when its header names RS256 or ES256 and a key id; the realm's key of that id
verifies the signature with that very algorithm; `iss` is the configured issuer; `exp` has not
passed (`leeway` seconds of clock difference allowed, also for `iat` and `nbf`); it is an access
token (`typ` "Bearer" when present); its `aud` contains, or its `azp` is, one of the configured
client ids; the access claim holds the access value; and it names a `preferred_username` (the
account's name) and a `sub` (the realm's user, to whom the account is bound). Every failure is a
403 whose message names the check that failed; a realm whose keys cannot be had (unreachable,
slow, an unusable answer) is a 503 to retry.
"""

import math
from dataclasses import dataclass
from typing import Any

import jwt

from server.config import KeycloakConfig
from server.errors import Forbidden, ServiceUnavailable
from server.sso.jwks import ALGORITHMS, ProviderKeys, ProviderUnavailable, UnknownKey

MAX_USERNAME = 255  # Keycloak's own limit
MAX_SUBJECT = 255  # OpenID Connect's limit (Keycloak's are UUIDs)

# PyJWT's failures, most specific first, and what the client is told.
_DECODE_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "Invalid token: expired"),
    (jwt.ImmatureSignatureError, "Invalid token: not valid yet (iat or nbf in the future)"),
    (jwt.InvalidIssuerError, "Invalid token: wrong issuer"),
    (jwt.InvalidAlgorithmError, "Invalid token: algorithm does not match the signing key"),
    (jwt.InvalidSignatureError, "Invalid token: bad signature"),
    (jwt.InvalidKeyError, "Invalid token: the signing key is not acceptable"),
)


@dataclass(frozen=True)
class SsoIdentity:
    """Who a verified token says the user is."""

    username: str
    realm_user: tuple[str, str]  # the token's iss and sub: the realm's user, whatever its name
    expires: int  # the token's exp (Unix seconds): a session must not outlive it
    display_name: str | None  # the token's name and email claims, if any
    email: str | None


class TokenVerifier:
    """Verifies Keycloak access tokens with the realm's cached keys."""

    def __init__(self, settings: KeycloakConfig, keys: ProviderKeys) -> None:
        self._settings = settings
        self._keys = keys

    async def verify(self, token: str) -> SsoIdentity:
        """The identity of a token that passes every check; Forbidden naming the first failure."""
        kid = _key_id(token)
        claims = self._decode(token, await self._key(kid))
        _check_type(claims)
        self._check_client(claims)
        self._check_access(claims)
        return _identity(claims)

    async def _key(self, kid: str) -> jwt.PyJWK:
        try:
            return await self._keys.get(kid)
        except UnknownKey:
            raise Forbidden("Invalid token: unknown signing key (kid)") from None
        except ProviderUnavailable:  # the realm's fault, or the network's: to retry, not refused
            raise ServiceUnavailable(
                "Cannot verify the token: the identity provider is unavailable",
                retry_after=max(1, math.ceil(self._settings.min_refetch_interval)),
            ) from None

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=self._settings.issuer_url,
                leeway=self._settings.leeway,
                options={
                    "require": ["exp", "iss"],
                    "verify_aud": False,  # aud or azp: checked by _check_client
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Forbidden(f"Invalid token: no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise Forbidden(_decode_message(exc)) from None
        return claims

    def _check_client(self, claims: dict[str, Any]) -> None:
        audience = claims.get("aud")
        named = audience if isinstance(audience, list) else [audience]
        accepted = self._settings.accepted_clients
        if not any(
            isinstance(name, str) and name in accepted for name in [*named, claims.get("azp")]
        ):
            raise Forbidden("Invalid token: not issued for this service (aud, azp)")

    def _check_access(self, claims: dict[str, Any]) -> None:
        claim, value = self._settings.access_claim, self._settings.access_value
        if not claim:
            return
        granted = claims.get(claim)
        if granted is None:
            raise Forbidden(f"No access: the token has no {claim} claim")
        if granted != value and not (isinstance(granted, list) and value in granted):
            raise Forbidden(f"No access: the token's {claim} does not include {value}")


def _key_id(token: str) -> str:
    """The key id from the header of a token signed with an accepted algorithm."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Forbidden("Invalid token: not a signed JWT") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise Forbidden("Invalid token: only RS256 and ES256 signatures are accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Forbidden("Invalid token: no key id (kid) in the header")
    return kid


def _decode_message(exc: jwt.PyJWTError) -> str:
    for kind, message in _DECODE_ERRORS:
        if isinstance(exc, kind):
            return message
    return "Invalid token: malformed claims"


def _check_type(claims: dict[str, Any]) -> None:
    # Keycloak marks its ID tokens "ID": those are for the browser, not for calling services.
    if claims.get("typ", "Bearer") != "Bearer":
        raise Forbidden("Invalid token: not an access token (typ)")


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text`: no NUL, and no lone surrogate (a token's JSON may
    carry half a pair, `\\ud83d`; POST /user/update's parser refuses one)."""
    return "\0" not in text and text.encode("utf-8", "replace").decode() == text


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _required(claims: dict[str, Any], name: str, limit: int) -> str:
    """The text of claim `name`, of at most `limit` characters, that PostgreSQL can store."""
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise Forbidden(f"Invalid token: no {name} claim")
    if len(value) > limit:
        raise Forbidden(f"Invalid token: the {name} claim is longer than {limit} characters")
    if not storable(value):
        raise Forbidden(f"Invalid token: the {name} claim holds a NUL or half a surrogate pair")
    return value


def _identity(claims: dict[str, Any]) -> SsoIdentity:
    username = _required(claims, "preferred_username", MAX_USERNAME)
    subject = _required(claims, "sub", MAX_SUBJECT)
    realm_user = (claims["iss"], subject)
    expires, name, email = int(claims["exp"]), _text(claims, "name"), _text(claims, "email")
    return SsoIdentity(username, realm_user, expires, name, email)
