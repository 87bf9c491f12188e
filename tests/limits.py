"""Shared by the tests of request limits (tests/test_limits_*.py): an app of a given
configuration, raw requests on a socket, the routes that read a body, bodies to send."""

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Config

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


def large_upload(job_id: str, key: str, page_extra: dict[str, Any] | None = None) -> bytes:
    """A POST /results body over 64 KiB (one page of 20,000 values)."""
    page = {"page_number": 1, "name": "p", "data": {"values": [1.5] * 20_000}, **(page_extra or {})}
    body = {
        "simulation_id": job_id,
        "update_key": key,
        "estimators": [{"name": "z", "pages": [page]}],
    }
    return orjson.dumps(body)


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of `size` spaces, flushed but never finished: a few KiB on the wire."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return packer.compress(b" " * size) + packer.flush(zlib.Z_SYNC_FLUSH)


async def chunked(data: bytes):
    """`data` as a chunked body (no Content-Length: the limit is checked while reading)."""
    for offset in range(0, len(data), 64):
        yield data[offset : offset + 64]
