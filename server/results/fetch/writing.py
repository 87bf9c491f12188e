"""Writing a `GET /results` body to its client: whole (send_body), or streamed with its exact
length (stream), the connection dropped when the client stops taking it."""

from collections.abc import AsyncIterator

from aiohttp import web

from server.errors import ServiceUnavailable
from server.http import ReleasingResponse
from server.limits import serving
from server.limits.serving import Stall, cut_short
from server.results.caches.pagecache import CHANGED, PagesChanged

FLUSH_AT = 1 << 20
FIRST_FLUSH = 64 << 10
APART = 64 << 10  # without one writelines, bodies from this size go apart from their headers


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
    were sent (a re-upload of a running simulation), or on an error (server.http). If they
    changed before anything was sent (the headers wait for the first piece: WithFirstPiece),
    the answer is a 503 the client retries, as for a body sent whole. A
    client that takes no piece for `server.body_timeout` seconds is cut off
    (ConnectionResetError, as when it goes away): the pages read ahead and the transport's
    buffer are not held for ever."""
    response = (WithFirstPiece if serving.one_write() else web.StreamResponse)(headers=headers)
    response.content_length = length
    await response.prepare(request)
    with Stall(request) as stall:
        try:
            sent = await _send(stall, response, pieces, gather)  # failing: closed (server/http.py)
        except PagesChanged:
            if request.writer.output_size == 0:  # headers not sent: replaced by the error's
                raise ServiceUnavailable(CHANGED, retry_after=1) from None
            sent = None  # ended where it was cut
        if sent != length:
            return cut_short(request, response, "the pages changed while they were sent")
        await stall.write(response.write_eof())
    return response


async def _send(
    stall: "Stall",
    response: web.StreamResponse,
    pieces: AsyncIterator[bytes | memoryview],
    gather: bool,
) -> int:
    """Write `pieces`, gathered up to a flush size if `gather`, else as they come (uncopied);
    the number of bytes sent. A piece of FLUSH_AT or more (a large page's stored segment) is
    written as it is too: copied into the buffer, a stalled client would hold a copy of it."""
    sent, buffer, flush_at = 0, bytearray(), min(FIRST_FLUSH, FLUSH_AT)
    async for piece in pieces:
        sent += len(piece)
        if not gather or len(piece) >= FLUSH_AT:
            if buffer:
                await stall.write(response.write(buffer))
                buffer = bytearray()
            await stall.write(response.write(piece))
            continue
        buffer += piece
        if len(buffer) >= flush_at:
            await stall.write(response.write(buffer))
            buffer = bytearray()  # a new one: the transport may still hold the written one
            flush_at = min(flush_at * 2, FLUSH_AT)
    await stall.write(response.write(buffer))
    return sent


class WithFirstPiece(web.StreamResponse):
    """A streamed response whose headers go to the transport with its first piece of body, in
    one writelines (where aiohttp writes that way: serving.one_write; elsewhere it would join
    them, a copy of the piece). Sent on their own when the response is prepared, as aiohttp
    does, they took a send of their own, and on loopback a packet: 2 % of the server's time on
    a 2.6 MB body file's fetches (py-spy)."""

    _send_headers_immediately = False  # aiohttp 3.14: written with the first write or write_eof


async def send_body(
    request: web.Request, headers: dict[str, str], body: bytes
) -> web.StreamResponse:
    """A response of `body`: one web.Response, its headers and body handed to the transport in
    one writelines (server/limits/serving.py) and let go of once written. Where that would be a
    join (no uvloop, Python before 3.12.9), a large body is written after its headers instead
    (a copy of the whole body cost more than the extra write). A HEAD gets the headers only
    (aiohttp leaves a web.Response's body out)."""
    if serving.one_write() or len(body) < APART or request.method == "HEAD":
        return ReleasingResponse(body=body, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write_eof(body)
    return response
