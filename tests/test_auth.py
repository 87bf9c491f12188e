"""The auth section of api.md: every status code and message, cookies and tokens."""

import errno
import hashlib
import os
import time

import jwt
import pytest
from aiohttp import web

from server.accounts import auth
from server.app import create_app
from server.config import ConfigError
from server.keys import SECRET, USER_CACHE
from tests.helpers import add_results_and_logs, eventually, login, payload, register, submit
from tests.limits import raw_request, response_of


def cookies_of(response) -> dict[str, str]:
    """Set-Cookie headers by cookie name, as sent."""
    return {h.split("=", 1)[0]: h for h in response.headers.getall("Set-Cookie", [])}


def attributes(set_cookie: str) -> set[str]:
    return {part.strip() for part in set_cookie.split(";")[1:]}


async def test_index(client):
    response = await client.get("/")
    assert response.status == 200
    assert await response.json() == {"message": "Hello World!", "version": "0.1.0"}


async def test_register_and_duplicate(client, conn):
    response = await client.put("/auth/register", json={"username": "bob.s_1", "password": "x" * 8})
    assert (response.status, await response.json()) == (201, {"message": "User created"})
    row = await conn.fetchrow("SELECT username, password_hash, source FROM users")
    assert row["username"] == "bob.s_1" and row["source"] == "local"
    assert row["password_hash"].startswith("$argon2id$") and "x" * 8 not in row["password_hash"]
    response = await client.put("/auth/register", json={"username": "bob.s_1", "password": "y" * 9})
    assert (response.status, await response.json()) == (409, {"message": "Username already taken"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": "password1"}, "Missing field: username"),
        ({"username": "alice"}, "Missing field: password"),
        ({"username": 12, "password": "password1"}, "Field username must be of type string"),
        (
            {"username": "al", "password": "password1"},
            "Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'",
        ),
        (
            {"username": "a" * 65, "password": "password1"},
            "Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'",
        ),
        (
            {"username": "al ice", "password": "password1"},
            "Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'",
        ),
        ({"username": "alice", "password": "short"}, "Invalid password: at least 8 characters"),
        ([1, 2], "JSON body must be an object"),
    ],
)
async def test_register_bad_input(client, conn, body, message):
    response = await client.put("/auth/register", json=body)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("username", ["alice\n", "alice\r\n", "\nalice"])
async def test_register_refuses_a_username_with_a_line_break(client, conn, username):
    """api.md: 3-64 characters of letters, digits and `._-`, nothing else (a regex `$` would
    let a trailing newline through, making "alice\n" a look-alike account beside "alice")."""
    response = await client.put("/auth/register", json={"username": username, "password": "x" * 8})
    assert (response.status, await response.json()) == (
        400,
        {"message": "Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'"},
    )
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_register_malformed_json(client):
    response = await client.put("/auth/register", data=b"{nope", headers={"Content-Type": "x"})
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})


async def test_register_closed(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(auth={"registration": "closed"})))
    response = await client.put("/auth/register", json={"username": "alice", "password": "x" * 8})
    assert (response.status, await response.json()) == (
        403,
        {"message": "Registration is disabled"},
    )


async def test_login_body_and_cookies(client):
    await register(client)
    before = time.time()
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202
    body = await response.json()
    assert set(body) == {"message", "access_exp", "refresh_exp"}
    assert body["message"] == "Login successful"
    assert isinstance(body["access_exp"], int) and isinstance(body["refresh_exp"], int)
    assert before * 1000 + 900_000 <= body["access_exp"] <= time.time() * 1000 + 901_000
    assert abs(body["refresh_exp"] - (before * 1000 + 604_800_000)) < 5000
    cookies = cookies_of(response)
    assert attributes(cookies["access_token"]) == {
        "HttpOnly",
        "Max-Age=900",
        "Path=/",
        "SameSite=Lax",
    }
    assert attributes(cookies["refresh_token"]) == {
        "HttpOnly",
        "Max-Age=604800",
        "Path=/",
        "SameSite=Lax",
    }


async def test_secure_cookies(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(auth={"secure_cookies": True})))
    await register(client)
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202
    cookies = cookies_of(response)
    assert set(cookies) == {"access_token", "refresh_token"}
    for header in cookies.values():
        assert "Secure" in attributes(header)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"username": "alice", "password": "wrongpass"}, 401, "Invalid username or password"),
        ({"username": "nobody", "password": "password1"}, 401, "Invalid username or password"),
        ({"username": "alice"}, 400, "Missing field: password"),
        ({"password": "password1"}, 400, "Missing field: username"),
    ],
)
async def test_login_errors(client, body, status, message):
    await register(client)
    response = await client.post("/auth/login", json=body)
    assert (response.status, await response.json()) == (status, {"message": message})
    assert "Set-Cookie" not in response.headers


async def test_status(client):
    await login(client)
    response = await client.get("/auth/status")
    assert response.status == 200
    assert await response.json() == {
        "message": "User status",
        "username": "alice",
        "source": "local",
        "display_name": None,
        "email": None,
    }


async def test_status_without_cookie(client):
    response = await client.get("/auth/status")
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})


def token_for(secret: str, **claims) -> str:
    base = {"sub": "1", "type": "access", "exp": time.time() + 60, "jti": "x"}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


async def status_with(client, token: str):
    """GET /auth/status with only this access token (the client's cookie jar is emptied)."""
    client.session.cookie_jar.clear()
    response = await client.get("/auth/status", headers={"Cookie": f"access_token={token}"})
    return response.status, await response.json()


async def test_answers_are_never_stored_by_caches(client, conn):
    """Answers that depend on the cookie, at URLs that are the same for every user (a shared
    cache in front would give one user's list, or a fresh access cookie, to the next), errors
    included, of every kind: made by a handler, by the error middleware, by aiohttp's router,
    in the UI dialect's sub-application, streamed by a handler, and the answer to an `Expect`
    (made before any middleware runs). Results say what they allow themselves."""
    await login(client)
    job_id = await submit(client)
    await add_results_and_logs(client, conn, job_id)
    answers = {}
    for method, path in [
        ("GET", "/auth/status"),
        ("GET", "/user/simulations"),
        ("GET", "/auth/refresh"),
        ("GET", "/"),
        ("GET", "/nowhere"),
        ("DELETE", "/"),
        ("GET", "/ui/nowhere"),
        ("GET", f"/logfiles?job_id={job_id}"),
        ("HEAD", f"/logfiles?job_id={job_id}"),
        ("GET", f"/results?job_id={job_id}"),
    ]:
        response = await client.request(method, path)
        await response.read()
        answers[method, path.partition("?")[0]] = (
            response.status,
            response.headers["Cache-Control"],
        )
    expect = await client.get("/", headers={"Expect": "nothing"})
    answers["Expect", "/"] = (expect.status, expect.headers["Cache-Control"])
    client.session.cookie_jar.clear()
    response = await client.get("/ui/user/simulations")
    answers["no cookie", "/ui/user/simulations"] = (
        response.status,
        response.headers["Cache-Control"],
    )
    assert answers == {
        ("GET", "/auth/status"): (200, "no-store"),
        ("GET", "/user/simulations"): (200, "no-store"),
        ("GET", "/auth/refresh"): (200, "no-store"),
        ("GET", "/"): (200, "no-store"),
        ("GET", "/nowhere"): (404, "no-store"),
        ("DELETE", "/"): (405, "no-store"),
        ("GET", "/ui/nowhere"): (404, "no-store"),
        ("GET", "/logfiles"): (200, "no-store"),  # streamed (json_stream)
        ("HEAD", "/logfiles"): (200, "no-store"),
        ("GET", "/results"): (200, "private, no-cache"),
        ("Expect", "/"): (417, "no-store"),
        ("no cookie", "/ui/user/simulations"): (401, "no-store"),
    }


async def test_rejected_tokens(client, conn):
    await login(client)
    secret = client.app[SECRET]
    invalid = (401, {"message": "Invalid or expired token"})
    ok = await status_ok(client)
    assert await status_with(client, token_for(secret)) == (200, ok)
    assert await status_with(client, "garbage") == invalid
    assert (
        await status_with(client, token_for("another secret, long enough for HS256 keys"))
        == invalid
    )
    assert await status_with(client, token_for(secret, exp=time.time() - 1)) == invalid
    # PyJWT takes a numeric string for exp; the server's tokens never have one (not a 500).
    assert await status_with(client, token_for(secret, exp=str(int(time.time()) + 60))) == invalid
    assert await status_with(client, token_for(secret, type="refresh")) == invalid
    assert await status_with(client, token_for(secret, sub="2")) == invalid  # no such user
    # The user's token generation (a password change starts a new one); none is the first.
    assert await status_with(client, token_for(secret, gen=0)) == (200, ok)
    assert await status_with(client, token_for(secret, gen=1)) == invalid
    await conn.execute("UPDATE users SET token_generation = 1")
    client.app[USER_CACHE].forget(1)
    assert await status_with(client, token_for(secret)) == invalid
    assert await status_with(client, token_for(secret, gen=1)) == (200, ok)
    unsigned = jwt.encode({"sub": "1", "type": "access", "exp": time.time() + 60}, None, "none")
    assert await status_with(client, unsigned) == invalid


async def status_ok(client) -> dict:
    response = await client.get("/auth/status")
    return await response.json()


@pytest.mark.parametrize("user_cache_ttl", [2.0, 60.0])
async def test_expired_access_token(aiohttp_client, make_config, conn, user_cache_ttl):
    """`auth.user_cache_ttl` delays only what the database says (a deleted user, a logout or
    password change in another process), never a token's own expiry: a Cookie header accepted
    before its token expired is not trusted after."""
    auth = {"access_ttl": 1, "user_cache_ttl": user_cache_ttl}
    client = await aiohttp_client(create_app(make_config(auth=auth)))
    await login(client)
    token = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    assert (await status_with(client, token))[0] == 200

    async def refused() -> bool:
        return await status_with(client, token) == (401, {"message": "Invalid or expired token"})

    await eventually(refused, timeout=20)  # exp is whole seconds: 2 s after login at most


async def test_deleted_user(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(auth={"user_cache_ttl": 0})))
    await login(client)
    await conn.execute("DELETE FROM users")
    response = await client.get("/auth/status")
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )


async def test_deleted_user_refused_within_cache_ttl(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(auth={"user_cache_ttl": 0.5})))
    await login(client)
    assert (await client.get("/estimators", params={"job_id": "x"})).status == 404
    await conn.execute("DELETE FROM users")
    started = time.monotonic()

    async def refused() -> bool:
        response = await client.get("/estimators", params={"job_id": "x"})
        return (response.status, await response.json()) == (
            401,
            {"message": "Invalid or expired token"},
        )

    await eventually(refused, timeout=5)
    assert time.monotonic() - started <= 1.5


async def test_a_user_deleted_within_the_cache_ttl_submits_nothing(
    aiohttp_client, make_config, conn
):
    """Within `auth.user_cache_ttl` a deleted user's token still passes the check; a submission
    then finds no user to lock: 401 and nothing stored (not a 500 from the foreign key)."""
    client = await aiohttp_client(create_app(make_config(auth={"user_cache_ttl": 60})))
    await login(client)
    assert (await client.get("/auth/status")).status == 200
    await conn.execute("DELETE FROM users")
    response = await client.post("/jobs/direct", json=payload())
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


async def test_refresh(client):
    first = await login(client)
    response = await client.get("/auth/refresh")
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"message", "access_exp"} and body["message"] == "Token refreshed"
    assert body["access_exp"] >= first["access_exp"]
    cookies = cookies_of(response)
    assert set(cookies) == {"access_token"}
    assert attributes(cookies["access_token"]) == {
        "HttpOnly",
        "Max-Age=900",
        "Path=/",
        "SameSite=Lax",
    }
    assert (await client.get("/auth/status")).status == 200


async def test_refresh_errors(client):
    response = await client.get("/auth/refresh")
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})
    response = await client.get("/auth/refresh", headers={"Cookie": "refresh_token=bad"})
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )
    await login(client)
    access = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    client.session.cookie_jar.clear()
    response = await client.get("/auth/refresh", headers={"Cookie": f"refresh_token={access}"})
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )


async def test_logout_revokes_refresh_token(client, conn):
    await login(client)
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    refresh_cookie = f"refresh_token={jar['refresh_token'].value}"
    response = await client.delete("/auth/logout")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    cookies = cookies_of(response)
    assert set(cookies) == {"access_token", "refresh_token"}
    for header in cookies.values():
        assert "Max-Age=0" in attributes(header)
    assert await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    response = await client.get("/auth/refresh", headers={"Cookie": refresh_cookie})
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )


async def test_dead_refresh_tokens_are_pruned_at_login(client, conn):
    """Revoked and expired refresh tokens of a user are deleted when they log in again; live
    tokens (another device's session) and other users' tokens stay."""
    await login(client)
    await client.delete("/auth/logout")  # revokes the first session's token
    assert await conn.fetchval("SELECT count(*) FROM refresh_tokens") == 1
    await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 1
    await register(client, "bob")
    alice = await conn.fetchval("SELECT id FROM users WHERE username = 'alice'")
    bob = await conn.fetchval("SELECT id FROM users WHERE username = 'bob'")
    await conn.executemany(
        "INSERT INTO refresh_tokens (token_sha256, user_id, expires_at)"
        " VALUES ($1, $2, now() - interval '1 second')",
        [(b"alice-expired", alice), (b"bob-expired", bob)],
    )
    assert await conn.fetchval("SELECT count(*) FROM refresh_tokens") == 3
    client.session.cookie_jar.clear()  # another device: a login ends the sessions it replaces
    await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    rows = await conn.fetch(
        "SELECT user_id, revoked_at IS NULL AS live, expires_at > now() AS unexpired"
        " FROM refresh_tokens ORDER BY created_at, token_sha256"
    )
    # alice: the live token of her second login and the one just issued; bob's is not hers
    assert sorted(tuple(row) for row in rows) == sorted(
        [(alice, True, True), (alice, True, True), (bob, True, False)]
    )


async def test_logout_without_cookie(client):
    response = await client.delete("/auth/logout")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    response = await client.delete("/auth/logout", headers={"Cookie": "refresh_token=junk"})
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})


@pytest.mark.parametrize(
    ("request_line", "cookie", "status", "message"),
    [
        ("GET /auth/status", "access_token", 401, "Invalid or expired token"),
        ("GET /results?job_id=x", "access_token", 401, "Invalid or expired token"),
        ("GET /ui/user/simulations", "access_token", 401, "Invalid or expired token"),
        ("GET /auth/refresh", "refresh_token", 401, "Invalid or expired token"),
        ("DELETE /auth/logout", "refresh_token", 200, "Logout successful"),
    ],
)
async def test_cookies_that_are_not_utf8_are_invalid_tokens(
    client, request_line, cookie, status, message
):
    """Bytes a browser would never send (aiohttp hands them on as lone surrogates)."""
    await login(client)  # a user exists: only the cookie is wrong
    head = f"{request_line} HTTP/1.1\r\nHost: x\r\n".encode() + b"Cookie: %s=\xffa.b\r\n" % (
        cookie.encode()
    )
    reader, writer = await raw_request(client, head)
    try:
        assert await response_of(reader) == (status, {"message": message})
    finally:
        writer.close()


async def test_refresh_token_stored_hashed(client, conn):
    await login(client)
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    jti = jwt.decode(jar["refresh_token"].value, options={"verify_signature": False})["jti"]
    stored = await conn.fetchval("SELECT token_sha256 FROM refresh_tokens")
    assert stored == hashlib.sha256(jti.encode()).digest()


@pytest.mark.production_hashes
async def test_passwords_are_stored_as_argon2id_of_production_cost(client, conn):
    """64 MiB, 3 passes, 4 lanes (the tests' own hashes are lighter: tests/conftest.py)."""
    await login(client)
    stored = await conn.fetchval("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    wrong = {"username": "alice", "password": "password2"}
    response = await client.post("/auth/login", json=wrong)
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid username or password"},
    )


async def test_secret_survives_restart(aiohttp_client, make_config, conn):
    config = make_config()
    first = await aiohttp_client(create_app(config))
    await login(first)
    cookie = first.session.cookie_jar.filter_cookies(first.make_url("/"))["access_token"].value
    secret_file = config.data_dir / "secret_key"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    await first.close()
    second = await aiohttp_client(create_app(config))
    response = await second.get("/auth/status", headers={"Cookie": f"access_token={cookie}"})
    assert response.status == 200


@pytest.mark.parametrize("content", ["", "\n", "too short to sign with"])
async def test_a_secret_file_too_short_to_sign_with_stops_the_start(
    aiohttp_client, make_config, conn, content
):
    """A generated secret left empty (an older server's first start interrupted while writing
    it) or one an operator wrote by hand: not a server whose every login is a 500 (PyJWT refuses
    an empty key) or whose tokens anyone can forge (a short key), but a configuration error
    naming the file, as for a short auth.secret."""
    config = make_config()
    secret_file = config.data_dir / "secret_key"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(content)
    with pytest.raises(ConfigError, match="secret_key: must be at least 32 characters"):
        await aiohttp_client(create_app(config))


async def test_configured_secret(aiohttp_client, make_config, conn):
    config = make_config(auth={"secret": "a configured secret of at least 32 characters"})
    client = await aiohttp_client(create_app(config))
    await register(client)
    assert (await status_with(client, token_for("a configured secret of at least 32 characters")))[
        0
    ] == 200
    assert not (config.data_dir / "secret_key").exists()


async def test_error_shapes(aiohttp_client, make_config, conn, caplog):
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = create_app(make_config(server={"max_body_size": 100}))
    app.router.add_get("/boom", boom)  # behind the access cookie
    client = await aiohttp_client(app)
    response = await client.get("/no/such/path")
    assert (response.status, await response.json()) == (404, {"message": "Not found"})
    response = await client.post("/auth/status")
    assert (response.status, await response.json()) == (405, {"message": "Method not allowed"})
    assert "GET" in response.headers["Allow"]
    response = await client.put("/auth/register", data=b"{" + b" " * 200 + b"}")
    assert (response.status, await response.json()) == (
        413,
        {"message": "Request body larger than 100 bytes"},
    )
    await login(client)
    response = await client.get("/boom")
    assert (response.status, await response.json()) == (500, {"message": "Internal server error"})
    assert "secret internals" in caplog.text and "Traceback" in caplog.text


async def test_the_route_tables_access_column_decides_who_needs_a_cookie(client):
    """Every "user" route of both tables refuses a request without a valid access cookie; no
    other route looks at it (public routes, and worker routes, which check the update key)."""
    from server.app import ROUTES, UI_ROUTES

    for prefix, routes in [("", ROUTES), ("/ui", UI_ROUTES)]:
        for method, path, _, access in routes:
            where = (method, prefix + path)
            response = await client.request(method, prefix + path)
            without = (response.status, await response.json())
            headers = {"Cookie": "access_token=not-a-token"}
            response = await client.request(method, prefix + path, headers=headers)
            forged = (response.status, await response.json())
            if access == "user":
                assert without == (401, {"message": "No token provided"}), where
                assert forged == (401, {"message": "Invalid or expired token"}), where
            else:
                assert forged[1] != {"message": "Invalid or expired token"}, where


async def test_secret_write_failure_leaves_no_unusable_secret(
    aiohttp_client, make_config, conn, monkeypatch
) -> None:
    config = make_config()
    real = os.fdopen

    class Full:
        def __init__(self, fd: int, mode: str) -> None:
            self.file = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(auth.os, "fdopen", Full)
    with pytest.raises(OSError):
        auth.load_secret(config)  # the first start fails: the disk is full
    monkeypatch.setattr(auth.os, "fdopen", real)
    # The operator frees some space and starts the server again.
    client = await aiohttp_client(create_app(config))
    await login(client)


async def test_longest_refresh_ttl_gives_a_session(aiohttp_client, make_config, conn) -> None:
    """The longest lifetime the configuration accepts is one a login can issue (not a 500)."""
    config = make_config(auth={"refresh_ttl": 100 * 365.25 * 24 * 3600})
    client = await aiohttp_client(create_app(config))
    await register(client)
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202, await response.text()


async def test_an_access_token_without_exp_is_401(client):
    """Tokens the server signs always expire; one without `exp` (signed with the secret, as a
    leaked or hand-made one would be) must never be accepted, nor crash the check."""
    await login(client)
    secret = client.server.app[SECRET]
    token = jwt.encode({"sub": "1", "type": "access", "jti": "x"}, secret, algorithm="HS256")
    client.session.cookie_jar.clear()
    response = await client.get("/auth/status", headers={"Cookie": f"access_token={token}"})
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )
