"""The large-results benchmark's HTTP client (bench/client.py) against a real aiohttp server: the
bytes it reads are the body's, on one keep-alive connection, and what it cannot measure (not a
200, no `Content-Length`) raises instead of counting."""

import asyncio
import io
import os

import pytest
from aiohttp import web

from bench import ceiling, large
from bench.client import Connection

IDENTITY = os.urandom(5_000_000)  # larger than the client's buffer: read in several pieces
GZIPPED = b"\x1f\x8b" + os.urandom(300_000)


async def empty(request: web.Request) -> web.Response:
    return web.Response(body=b"")


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"no length")
    return response


@pytest.fixture
async def base(aiohttp_server):
    app = ceiling.create_app(IDENTITY, GZIPPED)
    app.router.add_get("/empty", empty)
    app.router.add_get("/chunked", chunked)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def fetch_twice(base: str, path: str, headers: dict[str, str]) -> list[tuple[dict, bytes]]:
    connection, found = Connection(base), []
    try:
        request = connection.request(path, headers)
        for _ in range(2):  # the second on the same connection: kept alive, read from its start
            out = io.BytesIO()
            found.append((connection.fetch(request, out), out.getvalue()))
        return found
    finally:
        connection.close()


async def test_bodies_are_read_whole_on_one_connection(base):
    for headers, body in (({"Accept-Encoding": "identity"}, IDENTITY), ({}, IDENTITY)):
        for run, written in await asyncio.to_thread(fetch_twice, base, "/results", headers):
            assert written == body
            assert run["bytes"] == len(body)
            assert 0 < run["ttfb_ms"] <= run["seconds"] * 1000
    gzip = await asyncio.to_thread(fetch_twice, base, "/results?x=1", {"Accept-Encoding": "gzip"})
    assert [(run["bytes"], written) for run, written in gzip] == [(len(GZIPPED), GZIPPED)] * 2
    empty = await asyncio.to_thread(fetch_twice, base, "/empty", {})
    assert [(run["bytes"], written) for run, written in empty] == [(0, b"")] * 2


async def test_fetches_counts_every_fetch_it_made(base):
    runs = await asyncio.to_thread(large.fetches, base, "/results", {}, 0.05)
    assert len(runs) >= 3
    assert {run["bytes"] for run in runs} == {len(IDENTITY)}
    assert large.mb_per_s(runs) > 0


@pytest.mark.parametrize(
    ("path", "said"), [("/missing", "404 Not Found"), ("/chunked", "Transfer-Encoding: chunked")]
)
async def test_what_it_cannot_measure_raises(base, path, said):
    with pytest.raises(ConnectionError, match="not a 200 with a Content-Length") as raised:
        await asyncio.to_thread(fetch_twice, base, path, {})
    assert said in str(raised.value)
