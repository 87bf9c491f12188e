"""Signed tokens (HS256 JWTs) and their secret, auth cookies and the access check.

Routes marked "user" in the route table (server/app.py) are wrapped by `for_users`, which puts
the current user on the request under keys.USER. Refresh tokens carry a random id (jti) whose
SHA-256 is stored, so they can be revoked at logout.
"""

import contextlib
import functools
import hashlib
import math
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from server.accounts.usercache import UserCache
from server.config import Config, ConfigError
from server.config_checks import MIN_SECRET
from server.errors import Unauthorized
from server.keys import CONFIG, POOL, SECRET, USER, USER_CACHE
from server.models import User
from server.store import refresh_tokens, users

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
NO_TOKEN = "No token provided"
INVALID_TOKEN = "Invalid or expired token"


def load_secret(config: Config) -> str:
    """The signing secret: from config, else generated once and kept in the data directory."""
    if config.auth.secret:
        return config.auth.secret
    path: Path = config.data_dir / "secret_key"
    if not path.exists():
        _write_secret(path)
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:  # a directory, random bytes, no permission
        raise ConfigError(
            f"{path}: cannot be read as text ({exc}; remove it to have one made)"
        ) from None
    # Empty when an older server's first start was interrupted while writing it.
    if len(secret) < MIN_SECRET:
        raise ConfigError(
            f"{path}: must be at least {MIN_SECRET} characters (remove it to have one made)"
        )
    return secret


def _write_secret(path: Path) -> None:
    """A new secret at `path`, written whole under another name and then linked into place, so
    that a failed write (a full disk, a crash) never leaves an empty or partial secret there;
    if another process linked its own first, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)


async def secret_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SECRET] = load_secret(app[CONFIG])
    yield


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def make_refresh_token(secret: str, user_id: int, ttl: float) -> tuple[str, int, str]:
    """A signed refresh token, its expiry (Unix seconds) and its jti (stored, revocable)."""
    return _signed(secret, {"sub": str(user_id), "type": "refresh"}, ttl)


def session_id(token_sha256: bytes) -> str:
    """The id of a session, carried by its access tokens: of its refresh token's stored SHA-256,
    the first 16 bytes (no use to forge or revoke anything), as hex."""
    return token_sha256[:16].hex()


def make_access_token(
    app: web.Application,
    user_id: int,
    generation: int,
    not_after: int | None = None,
    session: str | None = None,
) -> tuple[str, int]:
    """A signed access token of the user's current token generation, and its expiry (Unix
    seconds, `[auth] access_ttl` from now, at most `not_after`); of the session (`session_id`)
    whose logout ends it (server/accounts/sessions.py), if any."""
    claims: dict[str, Any] = {"sub": str(user_id), "type": "access", "gen": generation}
    if session is not None:
        claims["sid"] = session
    ttl = app[CONFIG].auth.access_ttl
    token, expires, _ = _signed(app[SECRET], claims, ttl, not_after)
    return token, expires


def _signed(
    secret: str, claims: dict[str, Any], ttl: float, not_after: int | None = None
) -> tuple[str, int, str]:
    expires = math.ceil(time.time() + ttl)  # JWT "exp" is whole seconds
    if not_after is not None:
        expires = min(expires, not_after)
    jti = uuid.uuid4().hex
    claims = {**claims, "exp": expires, "jti": jti}
    return jwt.encode(claims, secret, algorithm="HS256"), expires, jti


def decode_token(secret: str, token: str, kind: str) -> dict[str, Any]:
    """The claims of a valid token of the given kind; 401 otherwise (algorithm pinned to HS256)."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except (jwt.PyJWTError, UnicodeEncodeError):  # a cookie's non-UTF-8 bytes: lone surrogates
        raise Unauthorized(INVALID_TOKEN) from None
    if claims.get("type") != kind or not _valid_claims(claims, kind):
        raise Unauthorized(INVALID_TOKEN)
    return claims


# A user id as _signed writes it: ASCII digits of a bigint (str.isdigit() also takes "²").
_USER_ID = re.compile(r"[1-9][0-9]{0,17}")
_SESSION_ID = re.compile(r"[0-9a-f]{32}")  # as session_id writes it


def _valid_claims(claims: dict[str, Any], kind: str) -> bool:
    """`sub` is a user id, `gen` an integer, `sid` a session id, `exp` a number (PyJWT also
    takes a numeric string, which the user cache could not compare); a refresh token's `jti`
    is its id."""
    sub, jti, gen = claims.get("sub"), claims.get("jti"), claims.get("gen", 0)
    numbers = type(gen) is int and type(claims["exp"]) in (int, float)
    shaped = isinstance(sub, str) and _USER_ID.fullmatch(sub) and numbers
    if not shaped or not _session_or_none(claims.get("sid")):
        return False
    return kind != "refresh" or (isinstance(jti, str) and 0 < len(jti) <= 64)


def _session_or_none(sid: object) -> bool:
    return sid is None or (isinstance(sid, str) and _SESSION_ID.fullmatch(sid) is not None)


def set_cookie(
    response: web.StreamResponse, config: Config, name: str, token: str, ttl: float
) -> None:
    """A `SameSite=None` cookie is also `Partitioned`, which browsers blocking third-party
    cookies (Debian's Chromium by default) keep (Python's cookies know it only from 3.14)."""
    response.set_cookie(
        name,
        token,
        max_age=math.ceil(ttl),
        path="/",
        httponly=True,
        samesite=config.auth.cookie_samesite,
        secure=config.auth.secure_cookies,
    )
    if config.auth.cookie_samesite == "None":
        morsel = response.cookies.pop(name)
        response.headers.add(hdrs.SET_COOKIE, morsel.OutputString() + "; Partitioned")


def clear_cookie(response: web.StreamResponse, config: Config, name: str) -> None:
    set_cookie(response, config, name, "", 0)


def expiry_ms(expires: float) -> int:
    return int(expires * 1000)


async def _access_user(app: web.Application, claims: dict[str, Any]) -> User | None:
    """The user of an access token, from the cache unless that user was read before the token's
    generation or session began (a password change or a login in another server process). A
    session found ended is remembered, so its token costs no more queries than a live one."""
    cache, generation, session = app[USER_CACHE], claims.get("gen", 0), claims.get("sid")
    user = cache.get(int(claims["sub"]))
    if user is None or user.token_generation < generation or _unheard_of(user, session, cache):
        read_at = time.monotonic()
        user = await users.get(app[POOL], int(claims["sub"]))
        if user is not None:
            cache.put(user, read_at)
            if session is not None and session not in user.sessions:
                cache.end_session(session)
    return user


def _unheard_of(user: User, session: str | None, cache: UserCache) -> bool:
    """Whether `session` may have begun after `user` was read: not among its live sessions,
    nor known to have ended."""
    return session is not None and session not in user.sessions and not cache.ended(session)


async def user_from_cookie(request: web.Request, cookie: str) -> User:
    """The user a valid access or refresh cookie belongs to; 401 otherwise."""
    token = request.cookies.get(cookie)
    if not token:
        raise Unauthorized(NO_TOKEN)
    kind = "access" if cookie == ACCESS_COOKIE else "refresh"
    claims = request.app[USER_CACHE].claims(token) if kind == "access" else None
    if claims is None:
        claims = decode_token(request.app[SECRET], token, kind)
    if kind == "refresh":
        user = await refresh_tokens.get_user(request.app[POOL], sha256(claims["jti"]))
    else:
        user = await _access_user(request.app, claims)
        if user is not None:
            request.app[USER_CACHE].put_claims(token, claims)
    if user is None or user.id != int(claims["sub"]) or not _current(claims, kind, user):
        raise Unauthorized(INVALID_TOKEN)
    if kind == "access" and claims.get("sid") is not None and claims["sid"] not in user.sessions:
        raise LoggedOut(INVALID_TOKEN)
    return user


class LoggedOut(Unauthorized):
    """An access token, otherwise valid, of a session that was logged out. The main API answers
    it like any invalid token; the UI's dialect as no token (server/ui/dialect.py): the UI
    sends requests as it logs out, which reach the server after the logout ended the session."""


def _current(claims: dict[str, Any], kind: str, user: User) -> bool:
    """An access token of the user's current token generation (a password change starts a new
    one; tokens made before generations existed count as 0); whether its session is live (not
    logged out; tokens without one end only when they expire) is checked after, as LoggedOut.
    Refresh tokens are revoked one by one."""
    if kind != "access":
        return True
    return bool(claims.get("gen", 0) == user.token_generation)


async def access_user(request: web.Request) -> User:
    """The user of the access cookie. A Cookie header accepted less than `user_cache_ttl` ago
    is trusted as it is, without parsing it again (the hot path of every user request)."""
    cache, header = request.app[USER_CACHE], request.headers.get("Cookie", "")
    user = cache.by_header(header)
    if user is None:
        user = await user_from_cookie(request, ACCESS_COOKIE)
        claims = cache.claims(request.cookies[ACCESS_COOKIE])
        if claims is not None:
            cache.put_header(header, user, claims["exp"])
    return user


def for_users(handler: Handler) -> Handler:
    """`handler` behind the access cookie: `request[USER]` is set before it runs, 401 without a
    valid cookie. Applied when routes are added (their table's access column), so public and
    worker routes, CORS preflights and aiohttp's 404/405 pay nothing per request."""

    @functools.wraps(handler)
    async def with_user(request: web.Request) -> web.StreamResponse:
        request[USER] = await access_user(request)
        return await handler(request)

    return with_user
