"""A small OpenID provider standing in for a Keycloak realm in the tests.

A real aiohttp server on a loopback port serves the realm's `/.well-known/openid-configuration`
and its JWKS (RSA and EC keys made by the test session), counts the requests it gets, can be made
to stall, and signs tokens shaped like Keycloak's access tokens. No Keycloak can be installed
here; the server under test only ever sees real HTTP and real signatures.
"""

import asyncio
import base64
import hashlib
import hmac
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

REALM_PATH = "/realms/plgrid"
CONFIG_PATH = f"{REALM_PATH}/.well-known/openid-configuration"
JWKS_PATH = f"{REALM_PATH}/protocol/openid-connect/certs"
BACKEND = "yaptide-backend"  # the client id the server accepts
UI = "yaptide-ui"  # the public client the browser signs in with
USERNAME = "plgalice"
# min_refetch_interval of the test apps: short, so a test can wait past it
REFETCH_INTERVAL = 1.0  # long enough that two sign-ins in a row on a loaded machine fall within it


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str  # RS256 or ES256
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict[str, Any]:
        """The public half as the realm publishes it."""
        to_jwk = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else ECAlgorithm.to_jwk
        public = to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(kid: str, algorithm: str) -> SigningKey:
    if algorithm == "RS256":
        return SigningKey(kid, algorithm, rsa.generate_private_key(65537, 2048))
    return SigningKey(kid, algorithm, ec.generate_private_key(ec.SECP256R1()))


def encryption_jwk(key: SigningKey) -> dict[str, Any]:
    """An encryption key, which Keycloak publishes beside its signature keys."""
    return {**key.jwk(), "kid": f"{key.kid}-enc", "alg": "RSA-OAEP", "use": "enc"}


class OpenIdProvider:
    """The realm: what it publishes (`keys`), what it was asked (`requests`), and its tokens."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = list(keys)
        self.requests: Counter[str] = Counter()  # path -> number of requests
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self.stalled = False  # when set, requests wait until `release` is set
        self.release = asyncio.Event()
        self.issuer = ""  # set once the server listens
        self.configuration_changes: dict[str, Any] = {}  # merged into the configuration
        self.jwks_body: Any = None  # sent instead of the key set, when set
        # sent instead of the key set, when set: these very bytes (with this Content-Encoding),
        # written a piece at a time, so that serving them holds no copy
        self.jwks_bytes: tuple[bytes, str | None] | None = None
        self.html_status: int | None = None  # when set, every answer is an HTML page of it

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(CONFIG_PATH, self._configuration)
        app.router.add_get(JWKS_PATH, self._jwks)
        return app

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        self.requests[request.path] += 1
        self.authorizations.append(request.headers.get("Authorization"))
        if self.stalled:
            await self.release.wait()
        if self.html_status is not None:  # as a proxy in front of the realm would answer
            return web.Response(
                status=self.html_status, text="<html>...</html>", content_type="text/html"
            )
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _configuration(self, request: web.Request) -> web.Response:
        body = {
            "issuer": self.issuer,
            "jwks_uri": f"{self.base_url()}{JWKS_PATH}",
            "authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth",
            **self.configuration_changes,
        }
        return await self._answer(request, {k: v for k, v in body.items() if v is not None})

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        if self.jwks_bytes is not None:
            return await self._stream(request, *self.jwks_bytes)
        keys = [key.jwk() for key in self.keys] + [encryption_jwk(self.keys[0])]
        body = {"keys": keys} if self.jwks_body is None else self.jwks_body
        return await self._answer(request, body)

    async def _stream(
        self, request: web.Request, body: bytes, encoding: str | None
    ) -> web.StreamResponse:
        self.requests[request.path] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if encoding is not None:
            response.headers["Content-Encoding"] = encoding
        await response.prepare(request)
        view = memoryview(body)
        for start in range(0, len(body), 1 << 16):
            await response.write(view[start : start + (1 << 16)])
        return response

    def base_url(self) -> str:
        return self.issuer.removesuffix(REALM_PATH)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """A Keycloak access token's claims for USERNAME, with `changes` (None removes a claim)."""
        now = int(time.time())
        claims = {
            "exp": now + 300,
            "iat": now,
            "jti": "4f1c2d9e",
            "iss": self.issuer,
            "aud": [BACKEND, "account"],
            "sub": "0b7e5f4a-2f6e-4d55-9b0c-1c1f3e9f4c11",
            "typ": "Bearer",
            "azp": UI,
            "scope": "openid profile email",
            "name": "Alice Example",
            "preferred_username": USERNAME,
            "email": "alice@example.org",
            "plgridAccessServices": ["PLG_OTHER_SERVICE", "PLG_YAPTIDE_ACCESS"],
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, key: SigningKey | None = None, **changes: Any) -> str:
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(**changes), key.private, algorithm=key.algorithm, headers={"kid": key.kid}
        )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token with `alg: none` and an empty signature."""
    return f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}."


def hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A token HMAC-SHA256-signed with `secret` (PyJWT refuses to do this with a public key,
    which is exactly the attack: the realm's public key used as an HS256 secret)."""
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
