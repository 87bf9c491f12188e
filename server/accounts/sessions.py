"""Sessions: the refresh_tokens rows whose id (`sid`) access tokens carry.

A login begins one with a refresh token; a Keycloak sign-in begins one with no refresh token (it
ends with its access cookie). Logging out ends the sessions the request's cookies name, so
that a copy of either cookie stops working at once; a password change ends every other session.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.accounts import auth
from server.errors import Unauthorized
from server.http import json_response
from server.keys import CONFIG, POOL, SECRET, USER_CACHE
from server.store import refresh_tokens, users

# Live sessions a user may have at once: one begun past it ends the oldest. Each read of the user
# carries every live session's id (the access check), so they must not grow with how often a
# client logs in.
MAX_SESSIONS = 100


async def issue_refresh_token(
    app: web.Application, user_id: int, generation: int
) -> tuple[str, float, str]:
    """A stored refresh token, its expiry and its session's id; 401 when `generation` is no
    longer the user's (a password change since the password was checked: that login must not
    outlive it)."""
    config = app[CONFIG]
    token, expires, jti = auth.make_refresh_token(app[SECRET], user_id, config.auth.refresh_ttl)
    session = await _begin(app, user_id, generation, jti, expires)
    if session is None:
        raise Unauthorized("Invalid username or password")
    return token, expires, session


async def begin_sso(request: web.Request, user_id: int, generation: int, expires: int) -> str:
    """The id of the session of a Keycloak sign-in, lasting until `expires` or sign-out. The UI
    signs in again with a fresh token every few minutes: the session the request's access cookie
    names goes on when it is a live one of this user (one session a browser, which one sign-out
    ends, and requests under way with the cookie it had keep working). Else a new one, whose
    refresh token is never handed out (nobody can refresh it); the cookie's session ends."""
    access = _own_session(request, user_id, auth.ACCESS_COOKIE)
    if access is not None:
        expires_at = datetime.fromtimestamp(expires, UTC)
        if await refresh_tokens.extend_session(request.app[POOL], user_id, access, expires_at):
            return access
    session = await _begin(request.app, user_id, generation, uuid.uuid4().hex, expires)
    if session is None:  # the account was deleted meanwhile
        raise Unauthorized(auth.INVALID_TOKEN)
    await end(request, auth.ACCESS_COOKIE)
    return session


async def _begin(
    app: web.Application, user_id: int, generation: int, jti: str, expires: float
) -> str | None:
    """The id of a new session of `jti`; None when `generation` is no longer the user's (or
    the user is gone). The user's row is locked first: a login at the same moment counts this
    one's session before it prunes (both counted the same sessions: one more than the bound)."""
    stored = auth.sha256(jti)
    expires_at = datetime.fromtimestamp(expires, UTC)
    async with app[POOL].acquire() as conn, conn.transaction():
        if not await users.lock_user(conn, user_id):
            return None
        await refresh_tokens.prune(conn, user_id, MAX_SESSIONS - 1)
        if not await refresh_tokens.add(conn, stored, user_id, expires_at, generation):
            return None
    return auth.session_id(stored)


def session_of(request: web.Request, user_id: int) -> str | None:
    """The session of the request's own valid refresh cookie, if any."""
    return _own_session(request, user_id, auth.REFRESH_COOKIE)


def current_session(request: web.Request, user_id: int) -> str | None:
    """The session the request goes on in: its refresh cookie's, else its access cookie's."""
    return session_of(request, user_id) or _own_session(request, user_id, auth.ACCESS_COOKIE)


async def end(request: web.Request, *cookies: str) -> None:
    """End the sessions of the request's valid `cookies` (by default both the refresh and the
    access cookie: a response that clears a cookie must end its session, or a copy of it would
    live on). Their access tokens end here at once, in other processes within user_cache_ttl."""
    for named in {_named_session(request, cookie) for cookie in cookies or _BOTH}:
        if named is not None and await refresh_tokens.revoke_session(request.app[POOL], *named):
            request.app[USER_CACHE].forget(named[0])


_BOTH = (auth.REFRESH_COOKIE, auth.ACCESS_COOKIE)


def _own_session(request: web.Request, user_id: int, cookie: str) -> str | None:
    """The session `cookie` names, if it is a valid one of the user `user_id`."""
    named = _named_session(request, cookie)
    return named[1] if named is not None and named[0] == user_id else None


def _named_session(request: web.Request, cookie: str) -> tuple[int, str] | None:
    """The user and session a valid `cookie` of the request names."""
    if cookie == auth.REFRESH_COOKIE:
        claims = _claims(request, cookie, "refresh")
        session = None if claims is None else auth.session_id(auth.sha256(claims["jti"]))
    else:
        claims = _claims(request, cookie, "access")
        session = None if claims is None else claims.get("sid")
    return None if claims is None or session is None else (int(claims["sub"]), session)


def _claims(request: web.Request, cookie: str, kind: str) -> dict[str, Any] | None:
    token = request.cookies.get(cookie)
    if not token:
        return None
    try:
        return auth.decode_token(request.app[SECRET], token, kind)
    except Unauthorized:
        return None


async def refreshed(request: web.Request) -> web.Response:
    """A new access cookie for the request's refresh cookie, in the session it names
    (`GET /auth/refresh`)."""
    app = request.app
    config = app[CONFIG]
    user = await auth.user_from_cookie(request, auth.REFRESH_COOKIE)
    access, access_exp = auth.make_access_token(
        app, user.id, user.token_generation, session=session_of(request, user.id)
    )
    response = json_response(
        {"message": "Token refreshed", "access_exp": auth.expiry_ms(access_exp)}
    )
    auth.set_cookie(response, config, auth.ACCESS_COOKIE, access, config.auth.access_ttl)
    return response


async def logged_out(request: web.Request) -> web.Response:
    """The sessions of the request's cookies ended and both cookies cleared
    (`DELETE /auth/logout`, and a Keycloak sign-out)."""
    await end(request)
    response = json_response({"message": "Logout successful"})
    auth.clear_cookie(response, request.app[CONFIG], auth.ACCESS_COOKIE)
    auth.clear_cookie(response, request.app[CONFIG], auth.REFRESH_COOKIE)
    return response
