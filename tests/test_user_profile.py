"""`POST /user/update` (profile fields and password change) and `GET /clusters`."""

import asyncio
import dataclasses

import pytest

from server.app import create_app
from server.config import ClusterConfig
from server.handlers.users import NO_PASSWORD
from tests.helpers import SEED_CLUSTERS_RESPONSE, eventually, lock_waiters_are, login

STATUS = {"message": "User status", "username": "alice", "source": "local"}


async def update(client, body) -> tuple[int, dict]:
    response = await client.post("/user/update", json=body)
    return response.status, await response.json()


async def status_of(client) -> dict:
    response = await client.get("/auth/status")
    assert response.status == 200
    return await response.json()


async def can_login(client, password: str) -> bool:
    body = {"username": "alice", "password": password}
    return (await client.post("/auth/login", json=body)).status == 202


async def test_seed_example(client, conn):
    """The seed's `{"field": "value"}` stands for a profile field (a literal "field" is 400)."""
    await login(client)
    assert await update(client, {"display_name": "value"}) == (200, {"message": "User updated"})
    assert await status_of(client) == {**STATUS, "display_name": "value", "email": None}


async def test_profile_fields(client, conn):
    await login(client)
    body = {"display_name": "Alice A." + "x" * 120, "email": "alice@example.org"}
    assert await update(client, body) == (200, {"message": "User updated"})
    assert await status_of(client) == {**STATUS, **body}
    assert await update(client, {"email": "a@" + "b" * 252}) == (200, {"message": "User updated"})
    assert await status_of(client) == {**STATUS, **body, "email": "a@" + "b" * 252}
    # null clears a field; the others stay
    assert await update(client, {"display_name": None}) == (200, {"message": "User updated"})
    assert await status_of(client) == {**STATUS, "display_name": None, "email": "a@" + "b" * 252}


async def test_password_change(client, conn):
    await login(client)
    old_hash = await conn.fetchval("SELECT password_hash FROM users")
    body = {"password": "new password", "current_password": "password1", "email": "a@b"}
    assert await update(client, body) == (200, {"message": "User updated"})
    new_hash = await conn.fetchval("SELECT password_hash FROM users")
    assert new_hash != old_hash and new_hash.startswith("$argon2id$")
    assert "new password" not in new_hash
    assert not await can_login(client, "password1")
    assert await can_login(client, "new password")
    assert (await status_of(client))["email"] == "a@b"


async def test_wrong_current_password_changes_nothing(client, conn):
    await login(client)
    before = dict(await conn.fetchrow("SELECT * FROM users"))
    body = {"password": "new password", "current_password": "password2", "display_name": "X"}
    assert await update(client, body) == (401, {"message": "Invalid current password"})
    assert dict(await conn.fetchrow("SELECT * FROM users")) == before
    assert await can_login(client, "password1")


async def session_cookies(client) -> str:
    """A new session of alice's (a login of its own): its Cookie header. (A login ends the
    sessions of the cookies it is sent with: the client's jar is emptied first.)"""
    client.session.cookie_jar.clear()
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202
    return "; ".join(f"{name}={morsel.value}" for name, morsel in response.cookies.items())


async def test_of_two_password_changes_at_once_one_is_made_and_the_other_changes_nothing(
    client, conn
):
    """Two sessions change the password at once, each giving the password both verified: the
    first made logs the other session out, and the second, whose current password is then no
    longer the current one, is refused and changes nothing (not a second 200 whose password
    is lost). The user's row is held locked until both have verified it and wait to write."""
    await login(client)
    sessions = [await session_cookies(client), await session_cookies(client)]
    client.session.cookie_jar.clear()

    async def change(cookie: str, password: str):
        body = {"password": password, "current_password": "password1", "display_name": password}
        response = await client.post("/user/update", json=body, headers={"Cookie": cookie})
        return response.status, await response.json(), response.cookies

    async with conn.transaction():
        await conn.execute("SELECT 1 FROM users FOR UPDATE")
        changes = asyncio.gather(
            change(sessions[0], "password A"), change(sessions[1], "password B")
        )
        await eventually(lambda: lock_waiters_are(conn, 2))
    answers = await changes
    assert sorted(answer[:2] for answer in answers) == [
        (200, {"message": "User updated"}),
        (401, {"message": "Invalid current password"}),
    ]
    made = 0 if answers[0][0] == 200 else 1
    password = ["password A", "password B"][made]
    row = await conn.fetchrow("SELECT display_name, token_generation FROM users")
    assert (row["display_name"], row["token_generation"]) == (password, 1)
    client.session.cookie_jar.clear()
    winner = f"access_token={answers[made][2]['access_token'].value}"  # its session goes on
    for cookie, expected in ((winner, 200), (sessions[1 - made], 401)):
        response = await client.get("/auth/status", headers={"Cookie": cookie})
        assert response.status == expected
    assert [await can_login(client, word) for word in ("password A", "password B")] == [
        made == 0,
        made == 1,
    ]


async def test_a_profile_update_of_a_user_deleted_meanwhile_is_401(
    aiohttp_client, make_config, conn
):
    """Within `auth.user_cache_ttl` a deleted user's token still passes the check; the update
    then finds no row to change: 401, not a 200 that changed nothing."""
    client = await aiohttp_client(create_app(make_config(auth={"user_cache_ttl": 60})))
    await login(client)
    assert await status_of(client)
    await conn.execute("DELETE FROM users")
    invalid = (401, {"message": "Invalid or expired token"})
    assert await update(client, {"display_name": "X"}) == invalid


ANY_FIELD = "Nothing to update: give at least one of display_name, email, password"
BAD_BODIES = [
    ({}, ANY_FIELD),
    ({"field": "value"}, "Unknown field: field"),
    ({"display_name": "a", "username": "bob"}, "Unknown field: username"),
    ({"source": "keycloak"}, "Unknown field: source"),
    ({"display_name": "x" * 129}, "Invalid display_name: at most 128 characters"),
    ({"display_name": 5}, "Field display_name must be of type string"),
    ({"email": "alice.example.org"}, "Invalid email: must contain @"),
    ({"email": "a@" + "b" * 253}, "Invalid email: at most 254 characters"),
    ({"email": ["a@b"]}, "Field email must be of type string"),
    ({"password": "new password"}, "Missing field: current_password"),
    ({"current_password": "password1"}, "Missing field: password"),
    (
        {"password": "short", "current_password": "password1"},
        "Invalid password: at least 8 characters",
    ),
    ({"password": None, "current_password": "password1"}, "Field password must be of type string"),
    (
        {"password": "new password", "current_password": None},
        "Field current_password must be of type string",
    ),
    (
        {"password": 12345678, "current_password": "password1"},
        "Field password must be of type string",
    ),
    # One bad field and the good ones are not applied either.
    ({"display_name": "ok", "email": "no at sign"}, "Invalid email: must contain @"),
    ([{"display_name": "x"}], "JSON body must be an object"),
]


async def test_bad_bodies_change_nothing(client, conn):
    await login(client)
    before = dict(await conn.fetchrow("SELECT * FROM users"))
    for body, message in BAD_BODIES:
        assert (body, *await update(client, body)) == (body, 400, {"message": message})
    response = await client.post("/user/update", data=b"{nope")
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert dict(await conn.fetchrow("SELECT * FROM users")) == before


PROMETHEUS = ClusterConfig("prometheus", "Prometheus (Cyfronet)")


@pytest.fixture
async def sso_client(aiohttp_client, make_config, conn):
    """A client logged in as a user whose source is then set to keycloak."""
    config = dataclasses.replace(make_config(), clusters=(PROMETHEUS,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    await conn.execute("UPDATE users SET source = 'keycloak' WHERE username = 'alice'")
    return client


async def test_clusters_seed_example(sso_client):
    response = await sso_client.get("/clusters")
    assert (response.status, await response.json()) == (200, SEED_CLUSTERS_RESPONSE)


async def test_clusters_from_config_in_order(aiohttp_client, make_config, conn):
    clusters = (ClusterConfig("ares", "Ares (Cyfronet)"), ClusterConfig("athena", "Athena", False))
    client = await aiohttp_client(create_app(dataclasses.replace(make_config(), clusters=clusters)))
    await login(client)
    await conn.execute("UPDATE users SET source = 'keycloak'")
    response = await client.get("/clusters")
    assert (response.status, await response.json()) == (
        200,
        {
            "message": "Available clusters",
            "clusters": [
                {"cluster_name": "ares", "display_name": "Ares (Cyfronet)", "available": True},
                {"cluster_name": "athena", "display_name": "Athena", "available": False},
            ],
        },
    )


async def test_clusters_none_configured(client, conn):
    await login(client)
    await conn.execute("UPDATE users SET source = 'keycloak'")
    response = await client.get("/clusters")
    assert (response.status, await response.json()) == (
        200,
        {"message": "Available clusters", "clusters": []},
    )


async def test_clusters_local_user(aiohttp_client, make_config, conn):
    config = dataclasses.replace(make_config(), clusters=(PROMETHEUS,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    response = await client.get("/clusters")
    assert (response.status, await response.json()) == (
        403,
        {"message": "Local users cannot access HPC clusters"},
    )


async def test_sso_user_cannot_change_a_password_it_does_not_have(sso_client, conn):
    """403, and no login attempt counted: a Keycloak user's tries must not use up those of a
    local user of the same name (before: 401 "Invalid current password", each an argon2 check
    counted against the name, so that the local namesake's right password then got 429)."""
    await conn.execute("UPDATE users SET password_hash = NULL")
    attempts = "SELECT * FROM login_attempts ORDER BY key"
    counted = await conn.fetch(attempts)  # the fixture's own login
    body = {"password": "new password", "current_password": "password1"}
    for _ in range(12):  # more than auth.login_attempts
        assert await update(sso_client, body) == (403, {"message": NO_PASSWORD})
    assert await conn.fetchval("SELECT password_hash FROM users") is None
    assert await conn.fetch(attempts) == counted


async def test_needs_login(client):
    assert await update(client, {"display_name": "x"}) == (401, {"message": "No token provided"})
    response = await client.get("/clusters")
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})
