"""Login throttling (per username, per address, in every server process) and password hashing
bounded by `auth.hash_concurrency`."""

import asyncio
import hashlib
import threading
from typing import Any

from server.accounts import passwords
from server.app import create_app
from tests.helpers import eventually, login, register
from tests.limits import started


async def test_login_throttled_per_username(aiohttp_client, make_config, conn) -> None:
    auth = {"login_attempts": 3, "login_window": 4.0}
    client = await started(aiohttp_client, make_config, auth=auth)
    await register(client)
    wrong = {"username": "alice", "password": "wrong-password"}
    answers = await asyncio.gather(*(client.post("/auth/login", json=wrong) for _ in range(5)))
    statuses = sorted(response.status for response in answers)
    assert statuses == [401, 401, 401, 429, 429]
    refused = next(response for response in answers if response.status == 429)
    expected = {"message": "Too many login attempts, try again later"}
    assert await refused.json() == expected
    assert 1 <= int(refused.headers["Retry-After"]) <= 4
    right = {"username": "alice", "password": "password1"}
    also_refused = await client.post("/auth/login", json=right)
    assert also_refused.status == 429  # even the right password, until the window has passed
    await asyncio.sleep(int(also_refused.headers["Retry-After"]) + 0.1)
    assert (await client.post("/auth/login", json=right)).status == 202


async def test_successful_logins_are_not_counted(aiohttp_client, make_config, conn) -> None:
    client = await started(aiohttp_client, make_config, auth={"login_attempts": 2})
    await register(client)
    right = {"username": "alice", "password": "password1"}
    for _ in range(5):
        assert (await client.post("/auth/login", json=right)).status == 202


async def test_login_throttled_per_address(aiohttp_client, make_config, conn) -> None:
    auth = {"login_attempts": 100, "login_address_attempts": 4, "login_window": 60.0}
    client = await started(aiohttp_client, make_config, auth=auth)
    statuses = []
    for n in range(6):  # a different (unknown) username each time, from one address
        guess = {"username": f"user{n}", "password": "wrong-password"}
        statuses.append((await client.post("/auth/login", json=guess)).status)
    assert statuses == [401, 401, 401, 401, 429, 429]


async def test_password_hashing_is_bounded(aiohttp_client, make_config, conn, monkeypatch) -> None:
    """With one hashing slot, concurrent logins hash one after another, while the event loop
    keeps answering other requests (one is answered while a hash is held under way)."""
    client = await started(aiohttp_client, make_config, auth={"hash_concurrency": 1})
    await register(client)
    right = {"username": "alice", "password": "password1"}
    lock, release = threading.Lock(), threading.Event()
    hashing = {"now": 0, "most": 0, "held too long": 0}
    real = passwords._hasher

    class Watched:
        """The real hasher, its checks counted and held until `release`."""

        def verify(self, *args: Any) -> bool:
            with lock:
                hashing["now"] += 1
                hashing["most"] = max(hashing["most"], hashing["now"])
            try:
                hashing["held too long"] += not release.wait(30)
                return real.verify(*args)
            finally:
                with lock:
                    hashing["now"] -= 1

    monkeypatch.setattr(passwords, "_hasher", Watched())
    logins = asyncio.gather(*(client.post("/auth/login", json=right) for _ in range(6)))
    while not hashing["now"]:
        await asyncio.sleep(0.01)
    assert (await asyncio.wait_for(client.get("/"), 20)).status == 200
    release.set()
    assert [response.status for response in await logins] == [202] * 6
    assert (hashing["most"], hashing["held too long"]) == (1, 0)


class HeldHasher:
    """The real password hasher, each verify held until `release` is set."""

    def __init__(self) -> None:
        self.real, self.release, self.verifying = passwords._hasher, threading.Event(), 0

    def verify(self, *args: Any) -> bool:
        self.verifying += 1
        self.release.wait(30)
        return self.real.verify(*args)

    def hash(self, *args: Any) -> str:
        return self.real.hash(*args)


async def test_a_taken_username_is_refused_without_a_hash(
    aiohttp_client, make_config, conn, monkeypatch
) -> None:
    """A registration of a taken name is refused before its password is hashed: with the one
    hashing slot held by a login, it is answered at once. Before, it hashed first: a flood of
    them (40 at once, anyone) held a user's login up from 0.25 s to 7-9 s."""
    client = await started(aiohttp_client, make_config, auth={"hash_concurrency": 1})
    await register(client)
    held = HeldHasher()
    monkeypatch.setattr(passwords, "_hasher", held)
    right = {"username": "alice", "password": "password1"}
    logging_in = asyncio.ensure_future(client.post("/auth/login", json=right))
    await eventually(lambda: asyncio.sleep(0, held.verifying))
    taken = await asyncio.wait_for(client.put("/auth/register", json=right), 10)
    assert (taken.status, await taken.json()) == (409, {"message": "Username already taken"})
    held.release.set()
    assert (await logging_in).status == 202


async def test_registrations_count_as_login_attempts(aiohttp_client, make_config, conn) -> None:
    """Of a taken name or of new names, past auth.login_attempts (per name) or
    login_address_attempts (per address): 429. A registration that succeeds is not counted."""
    auth = {"login_attempts": 3, "login_address_attempts": 5}
    client = await started(aiohttp_client, make_config, auth=auth)
    alice = {"username": "alice", "password": "password1"}
    statuses = [(await client.put("/auth/register", json=alice)).status for _ in range(5)]
    assert statuses == [201, 409, 409, 409, 429]
    for n in range(2):  # logins of unknown names: the address reaches its 5 attempts
        account = {"username": f"user{n}", "password": "wrong-password"}
        await client.post("/auth/login", json=account)
    refused = await client.put("/auth/register", json={**alice, "username": "bob"})
    assert (refused.status, await refused.json()) == (
        429,
        {"message": "Too many login attempts, try again later"},
    )
    assert (await conn.fetchval("SELECT count(*) FROM users")) == 1


async def test_guesses_of_the_current_password_count_as_login_attempts(
    aiohttp_client, make_config, conn
) -> None:
    """POST /user/update checks `current_password` as a login would, and is throttled as one:
    a stolen access cookie does not get more guesses than the login form. The right password
    then waits for the window, as a login does."""
    client = await started(aiohttp_client, make_config, auth={"login_attempts": 3})
    await login(client)
    statuses = []
    for guess in range(4):
        change = {"password": "new-password-1", "current_password": f"guess-{guess}"}
        statuses.append((await client.post("/user/update", json=change)).status)
    assert statuses == [401, 401, 401, 429]
    right = {"password": "new-password-1", "current_password": "password1"}
    assert (await client.post("/user/update", json=right)).status == 429
    again = {"username": "alice", "password": "password1"}
    assert (await client.post("/auth/login", json=again)).status == 429


async def test_refused_logins_leave_nothing_behind(aiohttp_client, make_config, conn) -> None:
    auth = {"login_attempts": 100, "login_address_attempts": 2, "login_window": 300.0}
    app = create_app(make_config(auth=auth))
    client = await aiohttp_client(app)
    for n in range(2):  # the address's allowance
        guess = {"username": f"user{n}", "password": "wrong-password"}
        assert (await client.post("/auth/login", json=guess)).status == 401
    for n in range(40):  # refused at once (429), each with a new 60 KiB username
        guess = {"username": f"{n:04d}" + "x" * 60 * 1024, "password": "wrong-password"}
        assert (await client.post("/auth/login", json=guess)).status == 429
    kept = await conn.fetchval("SELECT coalesce(sum(length(key)), 0) FROM login_attempts")
    assert kept < 1024, kept


async def test_login_attempts_out_of_the_window_are_removed(
    aiohttp_client, make_config, conn
) -> None:
    client = await started(aiohttp_client, make_config, auth={"login_window": 1.0})
    guess = {"username": "someone", "password": "wrong-password"}
    assert (await client.post("/auth/login", json=guess)).status == 401
    await asyncio.sleep(1.1)
    assert (await client.post("/auth/login", json={**guess, "username": "other"})).status == 401
    keys = await conn.fetch("SELECT key FROM login_attempts ORDER BY key")
    digest = hashlib.sha256(b"other").hexdigest()
    assert [row["key"] for row in keys] == ["address:127.0.0.1", f"user:{digest}"]


async def test_login_attempts_count_in_every_server_process(
    aiohttp_client, make_config, conn
) -> None:
    """`auth.login_attempts` is per username (README), whichever server process answers: with
    `--workers 2` (or two servers on the database) the kernel spreads logins over the
    processes, and each counted its own, so an attacker had twice the guesses (a real run.py
    --workers 2 answered 20 of 40 wrong passwords with 401 at login_attempts = 10)."""
    auth = {"login_attempts": 3, "login_address_attempts": 4, "login_window": 60.0}
    config = make_config(auth=auth)
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await register(first)
    wrong = {"username": "alice", "password": "wrong-password"}
    statuses = []
    for n in range(6):
        statuses.append((await (first, second)[n % 2].post("/auth/login", json=wrong)).status)
    assert statuses == [401, 401, 401, 429, 429, 429]
    guesses = [{"username": f"user{n}", "password": "wrong-password"} for n in range(4)]
    answers = await asyncio.gather(
        *((first, second)[n % 2].post("/auth/login", json=guess) for n, guess in enumerate(guesses))
    )
    assert sorted(answer.status for answer in answers) == [401, 429, 429, 429]  # per address
