"""Connections: slow bodies (408), idle and slow-header connections, Expect: 100-continue, a
client gone before its answer, and the database's connections at start."""

import asyncio
import contextlib
import gc
import signal
import socket
import struct
import threading
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import http_writer, web

from server import openapi
from server.accounts import passwords
from server.app import create_app
from server.config import ConfigError
from server.database.sql import query
from server.handlers.meta import VERSION
from server.keys import CONFIG
from server.limits import serving
from tests.helpers import eventually, register
from tests.limits import PLAIN, raw_request, response_of, started
from tests.servers import free_port, start, wait_ready


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


async def test_headers_and_body_go_to_the_transport_together(
    aiohttp_client, make_config, monkeypatch
) -> None:
    """server/limits/serving.py: once the app has started under uvloop, aiohttp hands a
    response's headers and body to the transport in one writelines (not joined into a copy of
    the body first), which it does by itself only from Python 3.12.9; under asyncio's loop
    before that, it is left as it is (a large body is then written apart from its headers).
    The answer is the same either way."""
    monkeypatch.setattr(http_writer, "SKIP_WRITELINES", True)  # aiohttp's choice on 3.11
    client = await started(aiohttp_client, make_config)
    assert serving.one_write_per_response in client.app.on_startup
    assert http_writer.SKIP_WRITELINES is not uvloop_running()
    assert serving.one_write() is uvloop_running()
    response = await client.get("/openapi.json")  # tens of KB: written with writelines
    document = openapi.document(VERSION, client.app[CONFIG].ui.api_prefix)
    assert (response.status, await response.json()) == (200, document)


def test_under_uvloop_aiohttp_writes_headers_and_body_together(monkeypatch) -> None:
    monkeypatch.setattr(http_writer, "SKIP_WRITELINES", True)
    monkeypatch.setattr(serving, "_ONE_WRITE", False)
    uvloop.run(serving.one_write_per_response(web.Application()))
    assert (http_writer.SKIP_WRITELINES, serving.one_write()) == (False, True)


def test_a_served_app_is_out_of_the_collectors_sight_once_started() -> None:
    """serving.served (run.py's apps): once started, what the process holds is frozen, so that
    a full collection under load walks only what was made since; cycles made since are still
    collected."""

    class Node:
        pass

    app = serving.served(web.Application())
    app.freeze()
    try:
        uvloop.run(app.startup())
        frozen = gc.get_freeze_count()
        assert frozen > 10_000 and all(obj is not app for obj in gc.get_objects())
        node = Node()
        node.itself = node
        alive = weakref.ref(node)
        del node
        gc.collect()  # may free frozen objects by reference counting, never freezes more
        assert alive() is None and gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def uvloop_running() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


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
