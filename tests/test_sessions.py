"""Sessions: a password change ends the user's other sessions (their refresh tokens and their
access tokens) while the one that made it goes on with a new access cookie; a logout ends the
sessions its cookies name; a user's live sessions are bounded."""

import asyncio
import time

import jwt

from server.accounts import passwords
from server.app import create_app
from server.keys import POOL, SECRET, USER_CACHE
from server.store import users
from tests.helpers import eventually, lock_waiters_are, register

ALICE = {"username": "alice", "password": "password1"}


async def session(client, password: str = "password1") -> dict[str, str]:
    """The cookies of a fresh login, as a Cookie header of their own (another browser)."""
    response = await client.post("/auth/login", json={**ALICE, "password": password})
    assert response.status == 202
    return cookie_header(client, response, {})


def cookie_header(client, response, before: dict[str, str]) -> dict[str, str]:
    """The Cookie header of a session after `response` (its cookies replace those it set)."""
    cookies = dict(item.split("=", 1) for item in before["Cookie"].split("; ")) if before else {}
    cookies |= {name: morsel.value for name, morsel in response.cookies.items()}
    client.session.cookie_jar.clear()  # each session sends only its own cookies
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


async def status(client, headers) -> tuple[int, dict]:
    response = await client.get("/auth/status", headers=headers)
    return response.status, await response.json()


REFUSED = (401, {"message": "Invalid or expired token"})
CHANGE = {"password": "new-password", "current_password": "password1"}


async def test_password_change_ends_other_sessions(client, conn) -> None:
    await register(client)
    mine, other = await session(client), await session(client)
    change = {"password": "new-password", "current_password": "password1"}
    response = await client.post("/user/update", json=change, headers=mine)
    assert (response.status, await response.json()) == (200, {"message": "User updated"})
    refused = await client.get("/auth/refresh", headers=other)
    assert (refused.status, await refused.json()) == (401, {"message": "Invalid or expired token"})
    kept = await client.get("/auth/refresh", headers=mine)
    assert (kept.status, (await kept.json())["message"]) == (200, "Token refreshed")
    live = await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == 1


async def test_profile_change_without_password_keeps_sessions(client, conn) -> None:
    await register(client)
    mine, other = await session(client), await session(client)
    response = await client.post("/user/update", json={"display_name": "Alice"}, headers=mine)
    assert response.status == 200
    assert (await client.get("/auth/refresh", headers=other)).status == 200


async def test_password_change_refuses_the_other_sessions_access_tokens(client, conn) -> None:
    await register(client)
    mine, other = await session(client), await session(client)
    assert (await status(client, other))[0] == 200  # accepted, and remembered by the process
    response = await client.post("/user/update", json=CHANGE, headers=mine)
    assert (response.status, await response.json()) == (200, {"message": "User updated"})
    assert response.cookies["access_token"]["httponly"]
    mine = cookie_header(client, response, mine)
    assert await status(client, other) == REFUSED
    assert (await status(client, mine))[0] == 200  # the new access cookie
    assert await conn.fetchval("SELECT token_generation FROM users") == 1
    # A new login gets the new generation's tokens.
    assert (await status(client, await session(client, "new-password")))[0] == 200


async def test_other_processes_refuse_old_access_tokens_within_the_cache_ttl(
    aiohttp_client, make_config, conn
) -> None:
    """Another server process learns of the change from the database once what it remembers
    of the user is older than `[auth] user_cache_ttl`."""
    config = make_config(auth={"user_cache_ttl": 0.2})
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await register(first)
    mine = await session(first)
    other = await session(second)
    assert (await status(second, other))[0] == 200
    response = await first.post("/user/update", json=CHANGE, headers=mine)
    assert response.status == 200
    first.session.cookie_jar.clear()
    await asyncio.sleep(0.3)
    assert await status(second, other) == REFUSED


async def test_login_in_flight_during_a_password_change_gets_no_live_session(
    client, conn, monkeypatch
) -> None:
    await register(client)
    mine = await session(client)
    checked, release = asyncio.Event(), asyncio.Event()
    verify = passwords.verify_password

    async def held_first(*args, **kwargs) -> bool:
        """The first check (the login's) answers only once the password has changed."""
        ok = await verify(*args, **kwargs)
        if not checked.is_set():
            checked.set()
            await release.wait()
        return ok

    monkeypatch.setattr(passwords, "verify_password", held_first)
    old = {"username": "alice", "password": "password1"}
    login = asyncio.ensure_future(client.post("/auth/login", json=old))
    await checked.wait()  # the old password is verified against the old hash
    changed = await client.post("/user/update", json=CHANGE, headers=mine)
    assert changed.status == 200
    release.set()
    response = await login
    other = cookie_header(client, response, {}) if response.status == 202 else {}
    refreshed = await client.get("/auth/refresh", headers=other)
    assert refreshed.status == 401, (response.status, refreshed.status, await refreshed.json())
    live = await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == 1  # the session that made the change, only


async def test_an_old_token_in_a_new_cookie_header_is_refused_within_the_ttl(
    aiohttp_client, make_config, conn
) -> None:
    """Another server process refuses a token from before a password change at the latest
    `user_cache_ttl` after it (README "Sessions"), also in a Cookie header it first sees late
    (the same token beside another cookie): that header may not extend the user's read."""
    ttl = 4.0
    config = make_config(auth={"user_cache_ttl": ttl})
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await register(first)
    mine = await session(first)
    other = await session(second)
    assert (await status(second, other))[0] == 200  # the second process reads the user
    read_at = asyncio.get_running_loop().time()
    assert (await first.post("/user/update", json=CHANGE, headers=mine)).status == 200
    changed_at = asyncio.get_running_loop().time()
    first.session.cookie_jar.clear()
    again = {"Cookie": other["Cookie"] + "; theme=dark"}  # a header not seen before
    await asyncio.sleep(max(0.0, read_at + 1.5 - changed_at))
    assert (await status(second, again))[0] == 200  # within the ttl of the read: still taken
    await asyncio.sleep(changed_at + ttl + 0.2 - asyncio.get_running_loop().time())
    assert await status(second, again) == REFUSED


async def test_cookie_headers_a_client_makes_up_do_not_fill_memory(client, conn) -> None:
    """Accepted Cookie headers are remembered whole (10,000 of them), and a header is the
    client's own making, up to 8 KB: a session adding a new cookie to each request kept 80 MB
    in a real server's RSS after 10,000 GETs of /auth/status."""
    await register(client)
    mine = await session(client)
    for number in range(300):
        junk = {"Cookie": f"{mine['Cookie']}; junk{number}={'x' * 7000}"}
        assert (await status(client, junk))[0] == 200
    kept = sum(len(header) for header in client.app[USER_CACHE]._headers)
    assert kept < 64 << 10, f"{kept / 2**20:.1f} MB of Cookie headers kept after 300 GETs"


async def test_the_session_that_changed_the_password_goes_on_in_every_process(
    aiohttp_client, make_config, conn
) -> None:
    """README "Sessions": the session that made the change gets a new access cookie and goes on.
    With `--workers 2` its next request may reach the other process, which read the user (its
    old token generation) less than `user_cache_ttl` ago: the new token must not be refused
    there as if it were an old one (real run.py --workers 2: 11 of 20 requests were 401)."""
    config = make_config(auth={"user_cache_ttl": 30.0})
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await register(first)
    mine = await session(first)
    assert (await status(second, mine))[0] == 200  # the second process reads the user
    response = await first.post("/user/update", json=CHANGE, headers=mine)
    assert response.status == 200
    renewed = cookie_header(first, response, mine)
    assert (await status(first, renewed))[0] == 200
    assert (await status(second, renewed))[0] == 200
    fresh = await session(second, "new-password")  # a new login there too
    assert (await status(second, fresh))[0] == 200


async def logout(client, headers) -> tuple[int, dict]:
    response = await client.delete("/auth/logout", headers=headers)
    return response.status, await response.json()


LOGGED_OUT = (200, {"message": "Logout successful"})


async def test_logout_ends_the_sessions_access_token_too(client, conn) -> None:
    """A logout revoked the refresh token only: its access token (a copy of the cookie kept by
    whoever had it) went on working until it expired, `access_ttl` (15 minutes) later."""
    await register(client)
    mine, other = await session(client), await session(client)
    assert (await status(client, mine))[0] == 200  # accepted, and remembered by the process
    assert await logout(client, mine) == LOGGED_OUT
    assert await status(client, mine) == REFUSED
    assert (await client.get("/user/simulations", headers=mine)).status == 401
    assert (await status(client, other))[0] == 200  # another session of the same user goes on


def only(headers: dict[str, str], name: str) -> dict[str, str]:
    """The Cookie header of `headers` with the one cookie `name` (a client that lost the other)."""
    kept = [item for item in headers["Cookie"].split("; ") if item.startswith(f"{name}=")]
    return {"Cookie": "; ".join(kept)}


async def test_a_logout_with_the_access_cookie_alone_ends_its_session(client, conn) -> None:
    """A logout ended only the session of the refresh cookie: sent with the access cookie alone,
    it ended nothing, and copies of both cookies went on working."""
    await register(client)
    mine, other = await session(client), await session(client)
    assert await logout(client, only(mine, "access_token")) == LOGGED_OUT
    assert await status(client, mine) == REFUSED
    refused = await client.get("/auth/refresh", headers=only(mine, "refresh_token"))
    assert (refused.status, await refused.json()) == REFUSED
    assert (await status(client, other))[0] == 200


async def test_a_password_changed_with_the_access_cookie_alone_keeps_its_session(
    client, conn
) -> None:
    """The new access cookie of a password change sent without the refresh cookie named no
    session: no logout could end it, and the session it came from was revoked under it."""
    await register(client)
    mine, other = await session(client), await session(client)
    response = await client.post("/user/update", json=CHANGE, headers=only(mine, "access_token"))
    assert (response.status, await response.json()) == (200, {"message": "User updated"})
    changed = cookie_header(client, response, mine)
    assert (await status(client, changed))[0] == 200
    refreshed = await client.get("/auth/refresh", headers=only(mine, "refresh_token"))
    assert refreshed.status == 200
    client.session.cookie_jar.clear()
    assert await status(client, other) == REFUSED
    assert await logout(client, only(changed, "access_token")) == LOGGED_OUT
    assert await status(client, changed) == REFUSED


async def test_a_refreshed_access_token_ends_with_its_session(client, conn) -> None:
    await register(client)
    mine = await session(client)
    response = await client.get("/auth/refresh", headers=mine)
    assert response.status == 200
    mine = cookie_header(client, response, mine)
    assert (await status(client, mine))[0] == 200
    assert await logout(client, mine) == LOGGED_OUT
    assert await status(client, mine) == REFUSED


async def test_other_processes_end_a_logged_out_session_within_the_cache_ttl(
    aiohttp_client, make_config, conn
) -> None:
    """Each process learns of a logout elsewhere from the database, once what it remembers of
    the user is older than `user_cache_ttl`; and takes a new login elsewhere at once."""
    config = make_config(auth={"user_cache_ttl": 0.2})
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await register(first)
    mine = await session(first)
    assert (await status(second, mine))[0] == 200  # remembered by the second process
    later = await session(first)  # a new session, unknown to the user the second remembers
    assert (await status(second, later))[0] == 200
    assert await logout(first, mine) == LOGGED_OUT
    await asyncio.sleep(0.3)
    assert await status(second, mine) == REFUSED
    assert (await status(second, later))[0] == 200


async def test_a_logged_out_token_sent_again_and_again_costs_one_query(
    client, conn, monkeypatch
) -> None:
    """A session found ended is remembered: its token, sent again, is refused from memory
    (it cost a query of the user and their sessions on every request)."""
    await register(client)
    mine = await session(client)
    assert await logout(client, mine) == LOGGED_OUT
    reads, read = [], users.get

    async def counted(*args):
        reads.append(args[1])
        return await read(*args)

    monkeypatch.setattr(users, "get", counted)
    for _ in range(20):
        assert await status(client, mine) == REFUSED
    assert len(reads) == 1


async def test_a_request_in_flight_during_the_logout_does_not_bring_its_session_back(
    client, conn, monkeypatch
) -> None:
    """A request that read the user just before a logout put that user, with the session still
    live, back into the process's memory after the logout had dropped it: the logged-out token
    was accepted again, in the process that logged out, for up to `user_cache_ttl`."""
    await register(client)
    mine = await session(client)
    read, reading, release = users.get, asyncio.Event(), asyncio.Event()

    async def held_once(*args):
        user = await read(*args)
        if not reading.is_set():  # the first read waits, done, until the logout is over
            reading.set()
            await release.wait()
        return user

    monkeypatch.setattr(users, "get", held_once)
    in_flight = asyncio.ensure_future(status(client, mine))
    await reading.wait()
    assert await logout(client, mine) == LOGGED_OUT
    release.set()
    assert (await in_flight)[0] == 200  # answered as of its read, before the logout
    assert await status(client, mine) == REFUSED


SESSIONS = 100  # README "Sessions": the live sessions a user may have at once


async def test_logins_keep_a_bounded_number_of_sessions(client, conn) -> None:
    """Every login added a live refresh token, kept for `auth.refresh_ttl` (7 days), and every
    read of the user (each `user_cache_ttl`, and at each new session) carried all of them: a
    client logging in in a loop grew the table, each read and each process's cached user without
    end (100,000 logins, about 4 hours at 0.15 s each: a read of 51 ms instead of 1, 11.7 MiB
    per cached user). Past SESSIONS, a login ends the user's oldest session; another user's
    sessions are untouched."""
    await register(client)
    await register(client, "bob")
    response = await client.post("/auth/login", json={**ALICE, "username": "bob"})
    bob = cookie_header(client, response, {})
    first = await session(client)
    for _ in range(SESSIONS + 20):
        last = await session(client)
    alice = await conn.fetchval("SELECT id FROM users WHERE username = 'alice'")
    rows = await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE user_id = $1", alice)
    assert rows <= SESSIONS, f"{SESSIONS + 21} logins: {rows} sessions kept"
    assert len((await users.get(client.app[POOL], alice)).sessions) <= SESSIONS
    assert (await client.get("/auth/refresh", headers=first)).status == 401  # the oldest ended
    assert (await client.get("/auth/refresh", headers=last)).status == 200
    assert (await client.get("/auth/refresh", headers=bob)).status == 200


async def test_two_logins_at_once_keep_the_bound_of_sessions(client, conn) -> None:
    """A user at one session short of SESSIONS logs in twice at once: the second login ends the
    oldest session, as one after the other would (both counted 99 before either added its own:
    101). The user's row is held locked until both wait to add their sessions."""
    await register(client)
    alice = await conn.fetchval("SELECT id FROM users WHERE username = 'alice'")
    await conn.execute(
        "INSERT INTO refresh_tokens (token_sha256, user_id, expires_at, created_at)"
        " SELECT sha256(i::text::bytea), $1, now() + interval '1 day', now() - i * interval '1 s'"
        " FROM generate_series(1, $2) i",
        alice,
        SESSIONS - 1,
    )
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", alice)
        logins = asyncio.gather(session(client), session(client))
        await eventually(lambda: lock_waiters_are(conn, 2))
    await logins
    live = "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL"
    assert await conn.fetchval(live, alice) == SESSIONS
    oldest = await conn.fetchval("SELECT sha256($1::int::text::bytea)", SESSIONS - 1)
    assert (
        await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE token_sha256 = $1", oldest)
        == 0
    )


async def test_sessions_that_ended_are_forgotten_for_users_who_never_log_in_again(
    aiohttp_client, make_config, client, conn
) -> None:
    """A login prunes its own user's ended sessions only: those of a user who never logged in
    again stayed in `refresh_tokens` for ever. The periodic sweep (at start, then hourly) now
    forgets every user's expired and revoked ones, and leaves live ones alone."""
    await register(client)
    expired, revoked, live = await session(client), await session(client), await session(client)
    assert (await logout(client, revoked))[0] == 200
    await conn.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second'"
        " WHERE created_at = (SELECT min(created_at) FROM refresh_tokens)"
    )
    await aiohttp_client(create_app(make_config()))  # its sweep runs at start
    for _ in range(100):
        if await conn.fetchval("SELECT count(*) FROM refresh_tokens") == 1:
            break
        await asyncio.sleep(0.05)
    kept = await conn.fetch("SELECT revoked_at, expires_at > now() AS live FROM refresh_tokens")
    assert [dict(row) for row in kept] == [{"revoked_at": None, "live": True}]
    assert (await client.get("/auth/refresh", headers=live)).status == 200
    assert (await client.get("/auth/refresh", headers=expired)).status == 401


STATUS = {
    "message": "User status",
    "username": "alice",
    "source": "local",
    "display_name": None,
    "email": None,
}


async def test_access_cookies_from_before_session_ids_last_until_a_password_change(
    client, conn
) -> None:
    """An upgrade logs nobody out: an access cookie made before sessions had ids carries none
    (so no logout ends it: README "Security and limits"), and a password change ends it."""
    await register(client)
    user_id = await conn.fetchval("SELECT id FROM users")
    claims = {"sub": str(user_id), "type": "access", "exp": int(time.time()) + 900, "jti": "a"}
    old = {"Cookie": "access_token=" + jwt.encode(claims, client.server.app[SECRET], "HS256")}
    assert await status(client, old) == (200, STATUS)
    mine = await session(client)
    response = await client.post("/user/update", json=CHANGE, headers=mine)
    assert response.status == 200
    client.session.cookie_jar.clear()  # the new access cookie is this other session's
    assert await status(client, old) == REFUSED
