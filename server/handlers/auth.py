"""The /auth endpoints of local accounts: register, login, refresh, status, logout."""

from aiohttp import web

from server.accounts import auth, passwords, sessions
from server.accounts.passwords import validate_password, validate_username
from server.errors import Conflict, Forbidden, Unauthorized
from server.http import json_response
from server.keys import CONFIG, HASH_SLOTS, LOGIN_THROTTLE, POOL, USER
from server.parsing import field, read_public_json
from server.store import users

TAKEN = "Username already taken"


async def _credentials(request: web.Request) -> tuple[str, str]:
    """The username and password of a public body, which is not kept while they are checked."""
    body = await read_public_json(request)
    return field(body, "username", str), field(body, "password", str)


async def register(request: web.Request) -> web.Response:
    """A new local user. Counted as a login attempt (server/limits/throttle.py), and a taken
    name is refused before its password is hashed: hashes are the logins' (auth.hash_concurrency),
    and a flood of registrations must not hold logins up."""
    app = request.app
    if app[CONFIG].auth.registration != "open":
        raise Forbidden("Registration is disabled")
    username, password = await _credentials(request)
    username, password = validate_username(username), validate_password(password)
    async with app[LOGIN_THROTTLE].counted(app[POOL], username, request.remote or ""):
        if await users.get_login(app[POOL], username) is not None:
            raise Conflict(TAKEN)
        password_hash = await passwords.hash_password(password, app[HASH_SLOTS])
        if await users.create(app[POOL], username, password_hash) is None:
            raise Conflict(TAKEN)  # registered meanwhile
    return json_response({"message": "User created"}, status=201)


async def login(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    username, password = await _credentials(request)
    async with app[LOGIN_THROTTLE].counted(app[POOL], username, request.remote or ""):
        found = await users.get_login(app[POOL], username)
        password_hash = found[1] if found else None  # None: a dummy hash is checked
        verified = await passwords.verify_password(password_hash, password, app[HASH_SLOTS])
        if found is None or not verified:
            raise Unauthorized("Invalid username or password")
    user_id, _, generation = found
    refresh, refresh_exp, session = await sessions.issue_refresh_token(app, user_id, generation)
    await sessions.end(request)  # the sessions of the cookies this login replaces
    access, access_exp = auth.make_access_token(app, user_id, generation, session=session)
    response = json_response(
        {
            "message": "Login successful",
            "access_exp": auth.expiry_ms(access_exp),
            "refresh_exp": auth.expiry_ms(refresh_exp),
        },
        status=202,
    )
    auth.set_cookie(response, config, auth.ACCESS_COOKIE, access, config.auth.access_ttl)
    auth.set_cookie(response, config, auth.REFRESH_COOKIE, refresh, config.auth.refresh_ttl)
    return response


async def refresh(request: web.Request) -> web.Response:
    return await sessions.refreshed(request)


async def status(request: web.Request) -> web.Response:
    profile = await users.get_profile(request.app[POOL], request[USER].id)
    if profile is None:
        raise Unauthorized(auth.INVALID_TOKEN)
    return json_response({"message": "User status", **profile})


async def logout(request: web.Request) -> web.Response:
    return await sessions.logged_out(request)
