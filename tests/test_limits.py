"""Request bodies, content encodings, login throttling and connection timeouts, against the real
server (its connection settings are run.py's)."""

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import signal
import socket
import struct
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.accounts import passwords
from server.app import ROUTES, UI_ROUTES, create_app
from server.config import Config, ConfigError
from server.database.sql import query
from server.keys import BODY_BUDGET
from server.limits.budget import FREE_BYTES as FREE
from server.limits.budget import FREE_PARSE, parse_cost
from tests.helpers import KEY, eventually, login, payload, register, set_key, submit
from tests.servers import free_port, start, wait_ready

BODY_ROUTES = [
    ("PUT", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/jobs/direct"),
    ("POST", "/tasks"),
    ("POST", "/jobs"),
    ("POST", "/results"),
    ("POST", "/logfiles"),
    ("POST", "/user/update"),
]
PLAIN = b'{"username": "alice", "password": "password1"}'

K = 1024


JSON = {"Content-Type": "application/json"}


async def started(aiohttp_client: Callable, make_config: Callable[..., Config], **sections: Any):
    return await aiohttp_client(create_app(make_config(**sections)))


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_not_what_its_encoding_says_is_400(client, method, path, encoding) -> None:
    await login(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.request(method, path, data=PLAIN, headers=headers)
    expected = {"message": f"Request body is not valid {encoding} data"}
    assert (response.status, await response.json()) == (400, expected)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
async def test_unsupported_encoding_is_415(client, method, path, encoding) -> None:
    await login(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.request(method, path, data=PLAIN, headers=headers)
    expected = {"message": f"Unsupported Content-Encoding: {encoding} (use gzip, deflate or none)"}
    assert (response.status, await response.json()) == (415, expected)


@pytest.mark.parametrize(
    ("encode", "encoding"),
    [
        (gzip.compress, "gzip"),
        (zlib.compress, "deflate"),
        (lambda data: zlib.compress(data, wbits=-15), "deflate"),  # raw deflate, sent as deflate
    ],
)
async def test_encoded_bodies_are_inflated(client, encode, encoding) -> None:
    await register(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.post("/auth/login", data=encode(PLAIN), headers=headers)
    assert response.status == 202, await response.text()


async def test_truncated_gzip_is_400(client) -> None:
    body = gzip.compress(PLAIN)[:-10]
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    expected = {"message": "Request body is not valid gzip data (truncated)"}
    assert (response.status, await response.json()) == (400, expected)


async def test_gzip_bomb_stops_at_the_limit(aiohttp_client, make_config, conn) -> None:
    client = await started(aiohttp_client, make_config, server={"worker_max_body_size": 1 << 20})
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    head = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "logfiles": {"a": ""}})
    bomb = gzip.compress(head[:-2] + b" " * (64 << 20) + b"}}")  # 64 MiB from 64 KiB
    response = await client.post("/logfiles", data=bomb, headers={"Content-Encoding": "gzip"})
    expected = {"message": f"Request body larger than {1 << 20} bytes"}
    assert (response.status, await response.json()) == (413, expected)
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def raw_request(client: TestClient, head: bytes, body: bytes = b"") -> tuple[Any, Any]:
    """A connection to the test server with `head` (request line and headers) and `body` sent."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    return reader, writer


async def response_of(reader: asyncio.StreamReader) -> tuple[int, Any]:
    """The status and JSON body of the next response on a raw connection (10 s at most)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 10)
    return int(lines[0].split()[1]), orjson.loads(body)


async def test_wrong_key_in_header_is_refused_before_the_body(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    # 256 MiB announced, 10 bytes sent: the answer comes without the rest.
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer wrong-key\r\nContent-Length: 268435456\r\n"
    )
    reader, writer = await raw_request(client, head, b'{"simulati')
    assert await response_of(reader) == (403, {"message": "Invalid update key"})
    writer.close()


async def test_wrong_key_in_header_with_a_small_body_is_403(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    response = await client.post("/tasks", json=body, headers={"Authorization": "Bearer wrong"})
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})


def large_upload(job_id: str, key: str, page_extra: dict[str, Any] | None = None) -> bytes:
    """A POST /results body over 64 KiB (one page of 20,000 values)."""
    page = {"page_number": 1, "name": "p", "data": {"values": [1.5] * 20_000}, **(page_extra or {})}
    body = {
        "simulation_id": job_id,
        "update_key": key,
        "estimators": [{"name": "z", "pages": [page]}],
    }
    return orjson.dumps(body)


async def test_wrong_key_in_a_large_body_is_refused_before_parsing(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = large_upload(job_id, "wrong-key")[:-10] + b"not json"  # parsing would say 400
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})


@pytest.mark.parametrize(
    "decoy",
    [{"update_key": "a-nested-decoy"}, {"meta": '"update_key": "in a string"'}],
    ids=["nested-member", "inside-a-string"],
)
async def test_right_key_in_a_large_body_is_accepted(client, conn, decoy) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await client.post("/results", data=large_upload(job_id, KEY, decoy))
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})


async def test_escaped_key_in_a_large_body_is_accepted(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    body = large_upload(job_id, "PLACEHOLDER").replace(b"PLACEHOLDER", escaped.encode())
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})


async def test_right_key_in_header_is_accepted(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await client.post("/tasks", json=body, headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Task updated"})


@pytest.mark.parametrize(
    "sent", ["gzip, key in header", "large, key in header", "large, key inside"]
)
async def test_the_key_of_a_job_that_has_ended_is_409_however_the_body_comes(
    client, conn, sent
) -> None:
    """A terminal job's key is refused as the job's end (409), also when it is checked before
    the body is read or parsed: the built-in worker sends its results gzipped with the key in
    the header, and stops quietly on a 409 only."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await client.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    if sent == "gzip, key in header":
        data = gzip.compress(orjson.dumps({"simulation_id": job_id, "estimators": []}))
        headers["Content-Encoding"] = "gzip"
    elif sent == "large, key in header":
        data = large_upload(job_id, KEY).replace(b'"update_key"', b'"no_key"')
    else:
        data = large_upload(job_id, KEY)
        del headers["Authorization"]
    response = await client.post("/results", data=data, headers=headers)
    expected = {"message": "Simulation is CANCELED: no more updates are accepted"}
    assert (response.status, await response.json()) == (409, expected)


async def test_body_budget_spent_is_503_with_retry_after(aiohttp_client, make_config, conn) -> None:
    """Past the first FREE_BYTES of a body (never counted), bytes are taken from the budget."""
    limits = {"max_body_size": FREE + 200 * K, "worker_max_body_size": FREE + 200 * K}
    limits["body_budget"] = 200 * K  # raised to the largest body: FREE + 200 KiB
    client = await started(aiohttp_client, make_config, server={**limits, "body_wait": 1.0})
    # The first request holds 190 KiB of the budget while it waits for the rest of its body.
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (FREE + 190 * K + 50)
    reader, writer = await raw_request(client, head, b" " * (FREE + 190 * K))
    await asyncio.sleep(0.3)
    started_at = time.monotonic()
    second = await client.post("/tasks", data=b" " * (FREE + 190 * K))
    waited = time.monotonic() - started_at
    expected = {"message": "Server busy: too many large request bodies at once, retry later"}
    assert (second.status, await second.json()) == (503, expected)
    assert second.headers["Retry-After"] == "1"
    assert waited >= 0.9
    writer.write(b'{"username": "alice", "password": "password1"}'.ljust(50))
    assert await response_of(reader) == (400, {"message": "Missing field: simulation_id"})
    writer.close()
    # The budget was given back: the same body is read now.
    third = await client.post("/tasks", data=b" " * (FREE + 190 * K))
    assert (third.status, await third.json()) == (400, {"message": "Malformed JSON body"})


def routes_with_bodies() -> list[tuple[str, str]]:
    """Every route of both route tables but the GETs (the UI dialect's under /ui)."""
    found = [(m, p) for m, p, _, _ in ROUTES if m != "GET"]
    return found + [(m, "/ui" + p) for m, p, _, _ in UI_ROUTES if m != "GET"]


async def test_every_route_that_reads_a_body_gives_the_budget_back(client, conn) -> None:
    """What a request body took from the budget goes back when it is answered, on every route
    but GETs; a body of whitespace is malformed JSON everywhere, once read."""
    await login(client)
    budget = client.app[BODY_BUDGET]
    answered = set()
    for method, path in routes_with_bodies():
        response = await client.request(method, path, data=b" " * (FREE + 5000))
        answered.add((response.status, (await response.read())[:40]))
        assert response.status < 500 and budget.free == budget.size, (method, path)
        assert budget.strangers.free == budget.strangers.size, (method, path)
    assert (400, b'{"message":"Malformed JSON body"}') in answered


async def test_requests_waiting_on_each_other_do_not_all_fail(
    aiohttp_client, make_config, conn
) -> None:
    """A holds 150 of 256 KiB budget, B 106; B waits for more, then A too: A, the one that
    would wait on waiters only, gets 503 at once, and B gets A's bytes and finishes."""
    limits = {"max_body_size": 256 * K, "worker_max_body_size": 256 * K, "body_budget": 256 * K}
    client = await started(aiohttp_client, make_config, server={**limits, "body_wait": 5.0})
    body = b'{"username": "alice", "password": "password1"}'.rjust(FREE + 150 * K)
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    reader_a, writer_a = await raw_request(client, head % (FREE + 190 * K), b" " * (FREE + 150 * K))
    await asyncio.sleep(0.3)
    reader_b, writer_b = await raw_request(client, head % len(body), body[: FREE + 106 * K])
    await asyncio.sleep(0.3)
    writer_b.write(body[FREE + 106 * K :])  # B waits: A, still reading, may give bytes back
    await asyncio.sleep(0.3)
    started_at = time.monotonic()
    writer_a.write(b" " * (40 * K))  # A would wait too: only waiters hold the budget now
    busy = {"message": "Server busy: too many large request bodies at once, retry later"}
    assert await response_of(reader_a) == (503, busy)
    assert time.monotonic() - started_at < 2
    assert await response_of(reader_b) == (400, {"message": "Missing field: simulation_id"})
    writer_a.close()
    writer_b.close()


async def test_slow_body_is_408(aiohttp_client, make_config) -> None:
    client = await started(aiohttp_client, make_config, server={"body_timeout": 0.5})
    head = b"PUT /auth/register HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
    reader, writer = await raw_request(client, head, b"{")
    expected = {"message": "Request body not received within 0.5 seconds"}
    assert await response_of(reader) == (408, expected)
    writer.close()


async def seconds_until_closed(reader, writer, drip: bytes) -> float:
    """How long the server keeps a connection open while `drip` is sent every 0.2 s."""
    started_at = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while time.monotonic() - started_at < 10:
            writer.write(drip)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                    break
    writer.close()
    return time.monotonic() - started_at


@pytest.mark.parametrize(
    ("first", "drip"),
    [(b"", b""), (b"GET / HTTP/1.1\r\n", b"X")],
    ids=["idle", "slow-headers"],
)
async def test_idle_or_slow_header_connection_is_closed(aiohttp_client, make_config, first, drip):
    client = await started(aiohttp_client, make_config, server={"keepalive_timeout": 1.0})
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(first)
    assert 0.5 <= await seconds_until_closed(reader, writer, drip) < 3


async def test_idle_keep_alive_connection_is_closed(aiohttp_client, make_config) -> None:
    client = await started(aiohttp_client, make_config, server={"keepalive_timeout": 1.0})
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await reader.readuntil(b"}")
    assert first.startswith(b"HTTP/1.1 200")
    started_at = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert 0.9 <= time.monotonic() - started_at < 5
    writer.close()


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


async def test_a_request_whose_client_left_is_carried_out_as_under_run_py(
    aiohttp_client, make_config, conn, monkeypatch
) -> None:
    """run.py (web.run_app) lets a handler finish when its client goes away; aiohttp's own
    TestServer cancels it, so the tests' servers must not (tests/conftest.py) or they would
    check another server: a login whose client left during the password check still opens
    its session."""
    client = await started(aiohttp_client, make_config)
    await register(client)
    checking, release = threading.Event(), threading.Event()
    real = passwords._hasher

    class Held:
        def verify(self, *args: Any) -> bool:
            checking.set()
            release.wait(30)
            return real.verify(*args)

    monkeypatch.setattr(passwords, "_hasher", Held())
    body = orjson.dumps({"username": "alice", "password": "password1"})
    head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    _, writer = await raw_request(client, head + b"Content-Length: %d\r\n" % len(body), body)
    await asyncio.get_running_loop().run_in_executor(None, checking.wait, 10)
    writer.close()
    await asyncio.sleep(0.5)  # the server sees the connection closed meanwhile
    release.set()

    async def opened() -> int:
        return await conn.fetchval("SELECT count(*) FROM refresh_tokens")

    assert await eventually(opened, timeout=10) == 1


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


async def test_encoding_that_is_not_utf8_is_415(client) -> None:
    """Header bytes that are not UTF-8 reach the application as lone surrogates: the answer
    naming the encoding must still be JSON, not aiohttp's plain-text 500."""
    head = (
        b"PUT /auth/register HTTP/1.1\r\nHost: x\r\nContent-Encoding: \xff\r\nContent-Length: 2\r\n"
    )
    reader, writer = await raw_request(client, head, b"{}")
    answer = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 415 "), answer
    expected = b'{"message":"Unsupported Content-Encoding: ? (use gzip, deflate or none)"}'
    assert answer.endswith(expected), answer


@pytest.mark.parametrize("size", [100, 100_000], ids=["small-body", "large-body"])
async def test_bearer_key_that_is_not_utf8_is_403(client, conn, size) -> None:
    """A key header with bytes that are not UTF-8 is a wrong key (403), never a 500."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    data = orjson.dumps(body).ljust(size)
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
        b"Content-Length: %d\r\n" % len(data)
    )
    reader, writer = await raw_request(client, head, data)
    assert await response_of(reader) == (403, {"message": "Invalid update key"})
    writer.close()


async def test_data_after_the_end_of_a_gzip_body_is_400(client) -> None:
    await register(client)
    body = gzip.compress(PLAIN) + b"not gzip" * 100
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    expected = {"message": "Request body is not valid gzip data"}
    assert (response.status, await response.json()) == (400, expected)


async def test_gzip_body_of_several_members_is_inflated_whole(client) -> None:
    """RFC 1952: a gzip file is a series of members (what `cat a.gz b.gz` makes)."""
    await register(client)
    body = gzip.compress(PLAIN[:20]) + gzip.compress(PLAIN[20:])
    assert gzip.decompress(body) == PLAIN
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    assert response.status == 202, await response.text()


async def test_data_after_the_end_of_a_deflate_body_is_400(client) -> None:
    await register(client)
    body = zlib.compress(PLAIN) + b"trailing"
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "deflate"})
    expected = {"message": "Request body is not valid deflate data"}
    assert (response.status, await response.json()) == (400, expected)


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of `size` spaces, flushed but never finished: a few KiB on the wire."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return packer.compress(b" " * size) + packer.flush(zlib.Z_SYNC_FLUSH)


async def test_strangers_holding_the_budget_block_neither_logins_nor_known_workers(
    aiohttp_client, make_config, conn
) -> None:
    """Unfinished gzip bodies of a few KiB from a stranger (no key anywhere) inflate to the
    largest worker body and stall: they can hold the strangers' half of the budget, but a login
    (a small body, never counted) and a worker whose header key was checked still get through."""
    limits = {"max_body_size": 1 << 20, "worker_max_body_size": 4 << 20, "body_budget": 8 << 20}
    limits |= {"body_wait": 1.0, "body_timeout": 6.0}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    bomb = gzip_bomb(4 << 20)
    assert len(bomb) < 10_000
    head = b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    head += b"Transfer-Encoding: chunked\r\n"
    held = [await raw_request(client, head, b"%x\r\n%s\r\n" % (len(bomb), bomb)) for _ in range(3)]
    await asyncio.sleep(1.5)  # the first holds the strangers' share, the others gave up (503)
    budget = client.app[BODY_BUDGET]
    assert budget.strangers.free == FREE and budget.free == (4 << 20) + FREE
    response = await client.post("/auth/login", data=PLAIN)
    assert response.status == 202, await response.text()
    body = large_upload(job_id, KEY).replace(b'"update_key":"' + KEY.encode() + b'",', b"")
    body = body.ljust(2 << 20)  # 2 MiB: more than the strangers left (and its parse fits)
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await client.post("/results", data=io.BytesIO(body), headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    for _, writer in held:
        writer.close()


async def test_a_stranger_waits_for_room_that_known_senders_hold(
    aiohttp_client, make_config, conn
) -> None:
    """A worker whose header key was checked holds most of the budget (no stranger holds any):
    a stranger's body that does not fit waits for room (up to body_wait), as before the
    strangers' share existed, instead of 503 at once; the room comes back when the worker's
    body ends."""
    limits = {"max_body_size": FREE + 300 * K, "worker_max_body_size": FREE + 300 * K}
    limits |= {"body_budget": 1, "body_wait": 5.0}  # raised to the largest body
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    head = b"POST /results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % KEY.encode()
    head += b"Content-Length: %d\r\n" % (FREE + 260 * K)
    reader, writer = await raw_request(client, head, b" " * (FREE + 250 * K))
    await asyncio.sleep(0.5)
    budget = client.app[BODY_BUDGET]
    assert budget.free < 150 * K and budget.strangers.free == budget.strangers.size
    started_at = time.monotonic()
    stranger = asyncio.ensure_future(client.post("/tasks", data=b" " * (FREE + 200 * K)))
    await asyncio.sleep(0.5)
    writer.write(b" " * (10 * K))  # the worker's body ends: its bytes go back
    assert (await response_of(reader))[0] == 400
    writer.close()
    response = await stranger
    answer = (response.status, await response.json(), round(time.monotonic() - started_at, 2))
    assert answer[:2] == (400, {"message": "Malformed JSON body"}), answer


async def test_connections_the_database_cannot_give_are_refused_at_start(
    aiohttp_client, make_config, conn
) -> None:
    """server.workers x database.pool_size beyond PostgreSQL's max_connections (`--workers 12`
    with the default pool on a default PostgreSQL): requests got 500 (TooManyConnectionsError)
    under load. Such a configuration is refused at start, naming the keys."""
    limit = await conn.fetchval(query("connection_limit"))
    config = make_config(database={"pool_size": limit}, runner={"kind": "none"})
    with pytest.raises(ConfigError) as refused:
        await aiohttp_client(create_app(config))
    assert str(refused.value) == (
        f"database.pool_size: 1 server process(es) with pools of {limit} connections need "
        f"{limit + 1} in all, more than the {limit} PostgreSQL gives (max_connections): lower "
        "database.pool_size or server.workers, or raise max_connections"
    )


@pytest.mark.parametrize(("method", "path"), [("POST", "/auth/login"), ("PUT", "/auth/register")])
async def test_a_strangers_body_cannot_make_the_parser_take_gigabytes(client, method, path):
    """Anyone may send a login or a registration, and its JSON is parsed whole: a body of empty
    arrays takes about 25 times its size in Python objects. With such bodies as large as
    `max_body_size` (64 MiB), one 64 KiB gzip login peaked at 2 GB of RSS, four at 6.7 GB. A
    public body is at most FREE bytes (413), so its parse stays within a few MiB."""
    dense = b'{"username": "alice", "password": "password1", "pad": [' + b"[]," * (1 << 21)
    data = gzip.compress(dense + b"[]]}")  # 6 MiB of JSON in 6 KiB
    tracemalloc.start()
    try:
        response = await client.request(
            method, path, data=data, headers={"Content-Encoding": "gzip"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) / 1024:.0f} KiB body"
    expected = {"message": f"Request body larger than {FREE} bytes"}
    assert (response.status, await response.json()) == (413, expected)


async def test_what_a_users_body_parses_into_is_held_from_the_budget(
    aiohttp_client, make_config, conn
):
    """A signed-in user's body is parsed whole too, and may be 64 MiB: four submissions of
    empty arrays at once peaked at 6.7 GB. The parse is estimated from the body's brackets,
    quotes and commas and held from the budget: past the whole budget it is a 413 before any
    parse, and a submission of large input files still fits."""
    limits = {"body_budget": 16 << 20, "max_body_size": 16 << 20, "worker_max_body_size": 1 << 20}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    dense = b'{"sim_type": "shieldhit", "input_type": "files", "input_files": {"pad": ['
    data = gzip.compress(dense + b"[]," * (1 << 20) + b"[]]}}")  # 3 MiB of JSON, ~70 MiB parsed
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    tracemalloc.start()
    try:
        response = await client.post("/jobs/direct", data=data, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = {
        "message": "Request body too large once parsed (about 138 MiB of objects; at most 13 MiB)"
    }
    assert (response.status, await response.json()) == (413, expected)
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) >> 10} KiB body"
    files = payload()
    files["input_files"]["beam.dat"] += "* " + "x" * (6 << 20) + "\n"  # a 6 MiB comment
    body = io.BytesIO(orjson.dumps(files))
    response = await client.post("/jobs/direct", data=body, headers=JSON)
    assert response.status == 202, await response.text()


@pytest.mark.parametrize("key", [b"", b'"update_key": "\\u0041", '], ids=["no-key", "escaped"])
@pytest.mark.parametrize("path", ["/tasks", "/jobs", "/logfiles", "/results"])
async def test_a_strangers_worker_body_cannot_make_the_parser_take_gigabytes(client, path, key):
    """README "Worker keys first": a stranger's body "never reaches the JSON parser". One with
    no key a check could reject before parsing (none at all, or an escaped one) was parsed
    whole: 6 KiB of gzip took 207 MiB, so a 256 KiB one (worker_max_body_size) about 6 GB.
    Its parse is held from the strangers' share of the budget, like a user's (413 here)."""
    dense = b'{"simulation_id": "x", ' + key + b'"pad": [' + b"[]," * (1 << 21)
    data = gzip.compress(dense + b"[]]}")  # 6 MiB of JSON in 6 KiB
    tracemalloc.start()
    try:
        response = await client.post(path, data=data, headers={"Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) >> 10} KiB body"
    assert response.status == 413, await response.text()


@pytest.mark.parametrize("character", ["\U0001f600", "\u20ac"], ids=["astral", "bmp"])
@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "escaped"])
def test_the_parse_of_text_is_within_its_estimate(character, ensure_ascii) -> None:
    """budget.parse_cost is what parsing a body "may add in Python objects, at most". Python
    keeps a string with one character past U+00FF at 2 or 4 bytes a character: an 8 MiB input
    file with one emoji parsed into 32 MiB, and 8 MiB were held (four 64 MiB submissions:
    about 1.3 GB against a 512 MiB budget)."""
    text = "x" * (8 << 20) + character
    body = json.dumps({"input_files": {"beam.dat": text}}, ensure_ascii=ensure_ascii).encode()
    parsed = sys.getsizeof(orjson.loads(body)["input_files"]["beam.dat"])
    estimate = parse_cost(body) + FREE_PARSE
    assert parsed <= estimate, f"{parsed >> 20} MiB parsed, {estimate >> 20} MiB estimated"


@pytest.mark.parametrize("escape", ["\\u001b", "\\u00e9"])
def test_escapes_of_narrow_characters_keep_the_estimate_narrow(escape) -> None:
    """A log's colour codes (`\\u001b[31m`) or an escaped é keep Python's string at 1 byte a
    character: they were held at 4, a 100 MB log with colours at 400 MB of budget."""
    text = ("x" * 63 + escape) * (1 << 17)  # 8 MiB and more
    body = ('{"logfiles": {"a": "' + text + '"}}').encode()
    parsed = sys.getsizeof(orjson.loads(body)["logfiles"]["a"])
    assert parsed <= parse_cost(body) + FREE_PARSE < 2 * len(body)


async def test_a_body_that_could_never_fit_once_parsed_is_413(aiohttp_client, make_config, conn):
    """README: "the budget bounds parsed bodies too: one that could never fit is 413". The body
    is held as well as its parse: a 10 MiB input file (about 20 MiB with its parse, budget 16
    MiB) got 503 "retry later" on an idle server, every time it was retried."""
    limits = {"body_budget": 16 << 20, "max_body_size": 16 << 20, "worker_max_body_size": 1 << 20}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    files = payload()
    files["input_files"]["beam.dat"] += "* " + "x" * (10 << 20) + "\n"  # a 10 MiB comment
    for _ in range(2):  # an idle server: a retry meets the same answer
        body = io.BytesIO(orjson.dumps(files))
        response = await client.post("/jobs/direct", data=body, headers=JSON)
        assert response.status == 413, (response.status, await response.json())


async def answer_of(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """The status line, headers and body of the next final response on a raw connection
    (10 s at most); a 100 Continue before it is skipped."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if head.startswith(b"HTTP/1.1 100 "):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return status.encode(), headers, body


@pytest.mark.parametrize("expect", [b"something-else", b"\xff"], ids=["unknown", "not-utf8"])
@pytest.mark.parametrize(
    "request_line", [b"GET /", b"POST /auth/login", b"POST /results", b"GET /ui/results"]
)
async def test_an_expectation_the_server_cannot_meet_is_a_json_417(client, expect, request_line):
    """aiohttp answers `Expect` before any middleware runs: anything but 100-continue was its
    plain-text 417, and a 500 with a traceback logged when the value is not UTF-8."""
    head = (
        request_line + b" HTTP/1.1\r\nHost: x\r\nExpect: " + expect + b"\r\nContent-Length: 0\r\n"
    )
    reader, writer = await raw_request(client, head)
    status, headers, body = await answer_of(reader)
    writer.close()
    assert status.startswith(b"HTTP/1.1 417 "), (status, body)
    assert headers["content-type"].startswith("application/json"), body
    assert isinstance(orjson.loads(body)["message"], str)


async def test_a_417_to_a_client_waiting_to_send_its_body_closes_the_connection(client) -> None:
    """README: an `Expect` other than `100-continue` is a JSON 417. A client that also asked for
    100-continue (`100-continue, foo`) waits for it before sending its body, and the 417 left
    the connection open with the body still owed: the next request on it (curl repeats the
    request there at once) was read as that body, then answered with a plain-text 400."""
    await register(client)
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue, foo\r\nContent-Length: %d\r\n" % len(PLAIN)
    )
    reader, writer = await raw_request(client, head)
    status, headers, body = await answer_of(reader)
    assert status.startswith(b"HTTP/1.1 417 "), body
    writer.write(head.replace(b"100-continue, foo", b"100-continue") + b"\r\n" + PLAIN)  # curl's
    following = await asyncio.wait_for(reader.read(), 15)  # repeat, on the same connection
    writer.close()
    assert (headers.get("connection"), following) == ("close", b"")


@pytest.mark.parametrize(
    ("head", "status", "message"),
    [
        (  # a public route's body limit (64 KiB), known from Content-Length
            b"POST /auth/login HTTP/1.1\r\nContent-Length: 100000000\r\n",
            413,
            "Request body larger than 65536 bytes",
        ),
        (  # over the worker limit (256 MiB)
            b"POST /results HTTP/1.1\r\nContent-Length: 1000000000\r\n",
            413,
            "Request body larger than 268435456 bytes",
        ),
        (  # a user route without an access cookie
            b"POST /jobs/direct HTTP/1.1\r\nContent-Length: 1000000\r\n",
            401,
            "No token provided",
        ),
        (  # a bearer key that is nobody's (README: refused before the body is read)
            b"POST /results HTTP/1.1\r\nAuthorization: Bearer nobodys-key\r\n"
            b"Content-Length: 100000000\r\n",
            403,
            "Invalid update key",
        ),
    ],
    ids=["login-over-limit", "results-over-worker-limit", "no-cookie", "wrong-key"],
)
async def test_a_request_refused_on_its_headers_gets_no_100_continue(
    client, head, status, message
) -> None:
    """`Expect: 100-continue` lets a server refuse a request on its headers before the body is
    sent (RFC 9110 10.1.1); the 100 was sent before any check, and the client then sent its
    100 MB only to be refused. The connection is closed after the refusal: the body is owed."""
    head += b"Host: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    reader, writer = await raw_request(client, head)
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = first.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    writer.close()
    assert status_line.startswith(f"HTTP/1.1 {status} "), status_line
    assert (orjson.loads(body), headers["connection"]) == ({"message": message}, "close")


@pytest.fixture
async def run_py(database_url, conn, tmp_path) -> AsyncIterator[tuple[int, Path]]:
    """(port, log file) of a real run.py (no runner), logging as it does in production."""
    port = free_port()
    process = start(database_url, tmp_path / "data", port)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, f"http://127.0.0.1:{port}", process)
        yield port, tmp_path / f"server-{port}.log"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


@pytest.mark.parametrize("path", [b"/auth/login", b"/nowhere"])
async def test_a_client_gone_before_its_100_continue_logs_no_traceback(run_py, path) -> None:
    """README: "no client can fill the server's log with tracebacks". The write of a 100
    Continue to a client that had reset its connection logged an ERROR and ~1.5 KB of
    traceback (aiohttp's own expect handler: on a path no route has)."""
    port, log = run_py
    for _ in range(20):
        with socket.socket() as sock:
            sock.connect(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            sock.sendall(
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(PLAIN)
            )
        await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as answer:
        assert answer.status == 200  # still serving
    await asyncio.sleep(0.5)
    assert " ERROR " not in log.read_text() and "Traceback" not in log.read_text()


async def test_content_encoding_in_two_header_lines_is_read_as_one_list(client) -> None:
    """RFC 9110 5.3: two `Content-Encoding` lines mean one list; only the first was read, and
    a body gzipped twice was inflated once, then parsed as JSON (400 instead of 415)."""
    body = gzip.compress(gzip.compress(PLAIN))
    message = "Unsupported Content-Encoding: gzip, gzip (use gzip, deflate or none)"
    for lines in (b"Content-Encoding: gzip, gzip\r\n", b"Content-Encoding: gzip\r\n" * 2):
        head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += lines + b"Content-Length: %d\r\n" % len(body)
        reader, writer = await raw_request(client, head, body)
        assert await response_of(reader) == (415, {"message": message})
        writer.close()


async def test_100_continue_is_still_sent_before_the_body(client) -> None:
    await register(client)
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(PLAIN)
    )
    reader, writer = await raw_request(client, head)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(PLAIN)
    status, _, body = await answer_of(reader)
    writer.close()
    assert status.startswith(b"HTTP/1.1 202 "), body


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return type(other) is int

    def __repr__(self) -> str:
        return "ANY_INT"


ANY_INT = _AnyInt()


# --- server/limits/bodies.py: the size limit's boundary, and the encodings a body may have ---

LIMIT = 200


def padded(size: int) -> bytes:
    """The login body, padded with blanks to exactly `size` bytes."""
    return PLAIN[:-1] + b" " * (size - len(PLAIN)) + b"}"


async def chunked(data: bytes):
    """`data` as a chunked body (no Content-Length: the limit is checked while reading)."""
    for offset in range(0, len(data), 64):
        yield data[offset : offset + 64]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_of_exactly_the_limit_is_read_one_more_byte_is_413(
    aiohttp_client, make_config, conn, framing
):
    """README: at most `server.max_body_size` bytes; 413 past it, not at it."""
    client = await aiohttp_client(create_app(make_config(server={"max_body_size": LIMIT})))
    await register(client)
    json = {"Content-Type": "application/json"}

    def body(size: int):
        return padded(size) if framing == "content-length" else chunked(padded(size))

    response = await client.post("/auth/login", data=body(LIMIT), headers=json)
    assert response.status == 202, await response.text()
    response = await client.post("/auth/login", data=body(LIMIT + 1), headers=json)
    assert (response.status, await response.json()) == (
        413,
        {"message": f"Request body larger than {LIMIT} bytes"},
    )


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("x-gzip", gzip.compress),  # gzip's other name (RFC 9110, 8.4.1.3)
        ("GZIP", gzip.compress),  # content codings are case-insensitive (RFC 9110, 8.4.1)
        ("Deflate", zlib.compress),
        ("identity", lambda data: data),
    ],
)
async def test_encodings_by_other_names_are_inflated(client, encoding, encode):
    await register(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.post("/auth/login", data=encode(PLAIN), headers=headers)
    assert response.status == 202, await response.text()
    assert await response.json() == {
        "message": "Login successful",
        "access_exp": ANY_INT,
        "refresh_exp": ANY_INT,
    }


async def test_a_deflate_body_of_two_streams_is_400(client):
    """Unlike gzip (a series of members), deflate is one zlib stream: a second one after it is
    data after the end of the body."""
    await register(client)
    body = zlib.compress(PLAIN[:20]) + zlib.compress(PLAIN[20:])
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "deflate"})
    expected = {"message": "Request body is not valid deflate data"}
    assert (response.status, await response.json()) == (400, expected)
