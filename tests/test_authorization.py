"""Who may do what, across the routes: another user's simulations, an update key on another
simulation, access cookies of sessions that ended (every cache warmed first), cookie flags and
CORS for untrusted origins; against a real app on a real port and the real PostgreSQL."""

import asyncio
import hashlib

import pytest

from server.app import create_app
from tests.helpers import (
    EDITOR,
    add_results_and_logs,
    login,
    set_simulation,
    stored_counts,
    submit,
)

USER_GETS = ("/jobs/direct", "/jobs", "/results", "/estimators", "/inputs", "/logfiles")
UI_GETS = tuple(f"/ui{path}" for path in USER_GETS)
FULL = {"simulations": 1, "tasks": 4, "inputs": 1, "estimators": 1, "pages": 2, "logfiles": 2}


@pytest.fixture
async def two_users(aiohttp_server, aiohttp_client, make_config, conn):
    """(server, alice, bob): two clients of one app, each logged in as its user."""
    server = await aiohttp_server(create_app(make_config()))
    alice = await aiohttp_client(server)
    bob = await aiohttp_client(server)
    await login(alice, "alice")
    await login(bob, "bob")
    return server, alice, bob


async def finished_job(client, conn, state: str = "COMPLETED") -> str:
    job_id = await submit(client, EDITOR)
    await add_results_and_logs(client, conn, job_id)
    await set_simulation(conn, job_id, job_state=state)
    return job_id


@pytest.mark.parametrize("state", ["COMPLETED", "RUNNING"])
async def test_another_users_simulation_is_403_everywhere(two_users, conn, state):
    """Every GET (also HEAD, and with the owner's ETag), cancel and delete of the API and the
    UI dialect: 403 for bob on alice's simulation, which stays whole."""
    _, alice, bob = two_users
    job_id = await finished_job(alice, conn, state)
    etag = (await alice.get("/results", params={"job_id": job_id})).headers.get("ETag")
    seen = {}
    for path in USER_GETS + UI_GETS:
        for method in ("GET", "HEAD"):
            r = await bob.request(method, path, params={"job_id": job_id})
            seen[(method, path)] = r.status
        r = await bob.get(path, params={"job_id": job_id}, headers={"If-None-Match": etag or "*"})
        seen[("COND", path)] = r.status
    for path in ("/jobs/direct", "/user/simulations", "/ui/jobs/direct", "/ui/user/simulations"):
        r = await bob.delete(path, params={"job_id": job_id})
        seen[("DELETE", path)] = r.status
    bad = {k: v for k, v in seen.items() if v != 403}
    assert bad == {}
    assert await stored_counts(conn, job_id) == FULL


async def set_key_of(conn, job_id: str, key: str) -> None:
    digest = hashlib.sha256(key.encode()).digest()
    await conn.execute(
        "UPDATE simulations SET update_key_sha256 = $2 WHERE job_id = $1", job_id, digest
    )


async def test_an_update_key_acts_on_its_own_simulation_only(two_users, conn):
    """The key of bob's X, in the body, the header, or the header beside Y's own key in the
    body (the header wins), is 403 on every worker endpoint for alice's Y; nothing changes."""
    _, alice, bob = two_users
    x = await submit(bob)
    y = await submit(alice)
    await set_key_of(conn, x, "key-of-x")
    await set_key_of(conn, y, "key-of-y")
    before = await conn.fetch("SELECT * FROM tasks ORDER BY simulation_id, task_id")
    bodies = {
        "/tasks": {
            "task_id": 1,
            "update_dict": {"task_state": "RUNNING", "simulated_primaries": 5},
        },
        "/jobs": {"job_state": "FAILED"},
        "/results": {
            "estimators": [
                {"name": "e", "pages": [{"page_number": 0, "name": "p", "data": {"values": [1]}}]}
            ]
        },
        "/logfiles": {"logfiles": {"evil": "x" * 70000}},
    }
    seen = {}
    for path, extra in bodies.items():
        for how in ("body", "header", "both"):
            body = {"simulation_id": y, **extra}
            headers = {}
            if how in ("body", "both"):
                body["update_key"] = "key-of-x" if how == "body" else "key-of-y"
            if how in ("header", "both"):
                headers["Authorization"] = "Bearer key-of-x"
            r = await bob.post(path, json=body, headers=headers)
            seen[(path, how)] = r.status
    assert {k: v for k, v in seen.items() if v != 403} == {}
    after = await conn.fetch("SELECT * FROM tasks ORDER BY simulation_id, task_id")
    assert before == after
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


ALL_USER_GETS = USER_GETS + UI_GETS + ("/auth/status", "/user/simulations", "/ui/user/simulations")


async def statuses_with(client, cookie_header: str, job_id: str, etag: str | None) -> dict:
    seen = {}
    for path in ALL_USER_GETS:
        for method in ("GET", "HEAD"):
            r = await client.request(
                method, path, params={"job_id": job_id}, headers={"Cookie": cookie_header}
            )
            seen[(method, path)] = r.status
        r = await client.get(
            path,
            params={"job_id": job_id},
            headers={"Cookie": cookie_header, "If-None-Match": etag or "*"},
        )
        seen[("COND", path)] = r.status
    r = await client.delete(
        "/jobs/direct", params={"job_id": job_id}, headers={"Cookie": cookie_header}
    )
    seen[("DELETE", "/jobs/direct")] = r.status
    r = await client.post(
        "/user/update", json={"display_name": "x"}, headers={"Cookie": cookie_header}
    )
    seen[("POST", "/user/update")] = r.status
    return seen


def cookie_header_of(client) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)


@pytest.mark.parametrize("how", ["deleted", "logout", "password"])
async def test_an_ended_access_cookie_is_401_everywhere(
    aiohttp_server, aiohttp_client, make_config, conn, how
):
    """A copied access cookie of a deleted user (after user_cache_ttl), of a logged-out session,
    or of a session before a password change made elsewhere: 401 on every user route, GET,
    HEAD and conditional, after every cache was warmed."""
    server = await aiohttp_server(create_app(make_config()))
    alice = await aiohttp_client(server)
    other = await aiohttp_client(server)
    stranger = await aiohttp_client(server)
    await login(alice, "alice")
    r = await other.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert r.status == 202
    job_id = await finished_job(alice, conn)
    etag = None
    for path in ALL_USER_GETS:  # warm every cache
        r = await alice.get(path, params={"job_id": job_id}, headers={"Accept-Encoding": "gzip"})
        etag = r.headers.get("ETag") or etag
        await alice.get(path, params={"job_id": job_id}, headers={"Accept-Encoding": "identity"})
    copied = cookie_header_of(alice)
    if how == "deleted":
        await conn.execute("DELETE FROM users WHERE username = 'alice'")
        await asyncio.sleep(2.5)
    elif how == "logout":
        r = await alice.delete("/auth/logout")
        assert r.status == 200
    else:
        r = await other.post(
            "/user/update", json={"password": "password2", "current_password": "password1"}
        )
        assert r.status == 200
    seen = await statuses_with(stranger, copied, job_id, etag)
    assert {k: v for k, v in seen.items() if v != 401} == {}


SECURE = {"secure_cookies": True, "cookie_samesite": "None"}
ALLOWED = "https://ui.example.org"


async def test_cookie_flags_and_cors_for_untrusted_origins(aiohttp_client, make_config, conn):
    """Cookies are HttpOnly, Secure, SameSite=None and Partitioned when configured so (also when
    cleared); an origin that is not listed gets no CORS header and its preflight is 403."""
    config = make_config(auth=SECURE, ui={"allowed_origins": ALLOWED})
    client = await aiohttp_client(create_app(config))
    await client.put("/auth/register", json={"username": "alice", "password": "password1"})
    for path in ("/auth/login", "/ui/auth/login"):
        body = {"username": "alice", "password": "password1"}
        response = await client.post(path, json=body)
        for cookie in response.headers.getall("Set-Cookie"):
            assert "; HttpOnly;" in cookie
            assert cookie.endswith("; Path=/; SameSite=None; Secure; Partitioned")
    response = await client.delete("/auth/logout")
    assert response.headers.getall("Set-Cookie") == [
        f'{name}=""; HttpOnly; Max-Age=0; Path=/; SameSite=None; Secure; Partitioned'
        for name in ("access_token", "refresh_token")
    ]
    untrusted = ("https://evil.example", "null", f"{ALLOWED}.evil.example", "http://ui.example.org")
    for origin in untrusted:
        for path in ("/auth/status", "/ui/jobs/direct", "/results", "/nope"):
            preflight = await client.options(
                path, headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
            )
            response = await client.get(path, headers={"Origin": origin})
            for answer in (preflight, response):
                assert not [h for h in answer.headers if h.startswith("Access-Control")]
            assert preflight.status in (403, 404)
    preflight = await client.options(
        "/auth/status", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
