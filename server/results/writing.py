"""Writing a `GET /results` body to its client: whole (send_body), or streamed with its exact
length (stream), the connection dropped when the client stops taking it."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web

from server.keys import CONFIG

log = logging.getLogger(__name__)

FLUSH_AT = 1 << 20
FIRST_FLUSH = 64 << 10
APART = 64 << 10  # bodies from this size are written apart from their headers (send_body)


async def stream(
    request: web.Request,
    headers: dict[str, str],
    pieces: AsyncIterator[bytes | memoryview],
    length: int,
    gather: bool = True,
) -> web.StreamResponse:
    """A response of `length` bytes (a Content-Length, so no chunk framing to copy into): the
    pieces gathered into writes of 64 KiB first, doubling up to FLUSH_AT (or written as they
    come when not `gather`: a body file's pieces of 1 MiB). Once the body
    has begun nothing else can be said, so when it cannot be completed the connection is closed
    and the client sees an incomplete body, never a torn one: if the pages changed while they
    were sent (a re-upload of a running simulation), or on an error (server.http). A
    client that takes no piece for `server.body_timeout` seconds is cut off
    (ConnectionResetError, as when it goes away): the pages read ahead and the transport's
    buffer are not held for ever. A HEAD gets the headers only, and no page is read."""
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(length)})
    response = web.StreamResponse(headers=headers)
    response.content_length = length
    await response.prepare(request)
    if not gather:  # the first large piece written apart from the headers (see send_body)
        request.writer.send_headers()
    sent = await _send(request, response, pieces, gather)  # failing: connection closed (http.py)
    if sent != length:
        return _cut_short(request, response, "the pages changed while they were sent")
    await _write(request, response.write_eof())
    return response


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    pieces: AsyncIterator[bytes | memoryview],
    gather: bool,
) -> int:
    """Write `pieces`, gathered up to a flush size if `gather`, else as they come (uncopied);
    the number of bytes sent."""
    sent, buffer, flush_at = 0, bytearray(), min(FIRST_FLUSH, FLUSH_AT)
    async for piece in pieces:
        sent += len(piece)
        if not gather:
            await _write(request, response.write(piece))
            continue
        buffer += piece
        if len(buffer) >= flush_at:
            await _write(request, response.write(buffer))
            buffer = bytearray()  # a new one: the transport may still hold the written one
            flush_at = min(flush_at * 2, FLUSH_AT)
    await _write(request, response.write(buffer))
    return sent


def _cut_short(request: web.Request, response: web.StreamResponse, why: str) -> web.StreamResponse:
    log.warning("GET %s: %s; connection closed", request.path, why)
    if request.transport is not None:
        request.transport.close()
    return response


async def _write(request: web.Request, sending: Awaitable[None]) -> None:
    """Await `sending` (a write, which waits for the client to take it) for at most
    `server.body_timeout` seconds; past it the connection is dropped (not closed: a close waits
    for the buffer to be sent) and ConnectionResetError raised."""
    timeout = request.app[CONFIG].server.body_timeout
    try:
        async with asyncio.timeout(timeout):
            await sending
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        message = f"GET {request.path}: the client took nothing for {timeout} s"
        log.warning("%s; connection dropped", message)
        raise ConnectionResetError(message) from None


async def send_body(
    request: web.Request, headers: dict[str, str], body: bytes
) -> web.StreamResponse:
    """A response of `body`. A large one is written after its headers rather than joined with
    them into one new buffer (aiohttp does that before Python 3.12: a copy of the whole body).
    A HEAD gets the headers only (aiohttp leaves a web.Response's body out)."""
    if len(body) < APART or request.method == "HEAD":
        return web.Response(body=body, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    request.writer.send_headers()
    await response.write(body)
    await response.write_eof()
    return response
