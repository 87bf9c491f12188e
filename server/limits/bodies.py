"""Reading request bodies with bounded memory and time.

- Size: at most `limit` bytes once inflated (413 past it), checked while reading.
- Memory across requests: buffered bytes (past the first 64 KiB of a body) are taken from one
  budget per server process (`server.body_budget`, of which strangers share half: see
  server/limits/budget.py), given back when the request ends (with_body_budget). A request that
  finds the budget spent waits up to `server.body_wait` seconds, then gets 503 with Retry-After
  (workers retry 5xx answers).
- Parsing: a JSON body also holds, until the request ends, what its parse is estimated to add
  (hold_for_parsing; up to ~24 times its size for `[[],[],...]`), so that the budget bounds the
  parsed objects too.
- Time: the whole body must arrive within `server.body_timeout` seconds (408 otherwise).
- Content-Encoding: aiohttp's own decompression is turned off (server/limits/serving.py) so
  that an encoded body is inflated here, a chunk at a time with a bound on what one chunk may
  inflate to; a body that is not what its header says is 400, an encoding other than gzip or
  deflate 415.
"""

import asyncio
import functools
import zlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from server.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from server.keys import BODY_BUDGET, CONFIG, CONTINUE_OWED, USER
from server.limits.budget import (
    HELD,
    KEY_CHECKED,
    PARSE_HELD,
    STRANGER,
    counted,
    parse_cost,
    paused_parse_cost,
)
from server.limits.pauses import Pauses

_CHUNK = 1 << 18
# zlib window bits: gzip only; zlib-wrapped deflate (RFC 1950); raw deflate, which some clients
# send as "deflate" anyway.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def with_body_budget(handler: Handler) -> Handler:
    """`handler` whose request may read a body: the bytes it took from the budget go back when
    the request is answered. Applied when routes are added, to every method but GET (server/app.py
    add_routes), so that GETs, the hot path, pay nothing; reading a body elsewhere is an error."""

    @functools.wraps(handler)
    async def giving_back(request: web.Request) -> web.StreamResponse:
        request[HELD] = 0
        try:
            return await handler(request)
        finally:
            if held := request[HELD]:
                await request.app[BODY_BUDGET].give_back(request, held)

    return giving_back


def _check_encoding(encoding: str) -> None:
    if encoding not in ("", "identity", *_WBITS):
        raise UnsupportedMediaType(
            f"Unsupported Content-Encoding: {encoding} (use gzip, deflate or none)"
        )


def _inflater(encoding: str, first: bytes) -> "zlib._Decompress":
    wbits = _WBITS[encoding]
    if encoding == "deflate" and first[0] & 0x0F != 8:  # no zlib header (RFC 1950): raw deflate
        wbits = -zlib.MAX_WBITS
    return zlib.decompressobj(wbits)


async def _raw_chunks(request: web.Request) -> AsyncIterator[bytes]:
    if request.get(CONTINUE_OWED):  # the client waits for this to send its body
        request[CONTINUE_OWED] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response's size, as aiohttp counts it, starts after
    while chunk := await request.content.read(_CHUNK):
        yield chunk


def _encoding(request: web.Request) -> str | None:
    """The body's Content-Encoding (None: identity); 415 for one this server cannot inflate."""
    # Several header lines are one list (RFC 9110 5.3), as "gzip, gzip" on one line.
    encoding = ", ".join(request.headers.getall("Content-Encoding", [])).strip().lower()
    _check_encoding(encoding)
    return encoding if encoding not in ("", "identity") else None


async def _chunks(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body's bytes as sent, or inflated a bounded piece at a time."""
    encoding = _encoding(request)
    if encoding is None:
        async for chunk in _raw_chunks(request):
            yield chunk
        return
    async for piece in _inflated(_raw_chunks(request), encoding, limit):
        yield piece


async def _inflated(
    chunks: AsyncIterator[bytes], encoding: str, limit: int
) -> AsyncIterator[bytes]:
    """Inflated pieces; a gzip body may be several members (RFC 1952), and anything after the
    end of the data (or of a member, unless another member starts there) is 400."""
    inflater = None
    async for chunk in chunks:
        data = chunk
        while data:
            if inflater is None or inflater.eof:
                if inflater is not None and encoding == "deflate":
                    raise BadRequest(f"Request body is not valid {encoding} data")
                inflater = _inflater(encoding, data)
            try:
                # At most limit + 1 bytes from one piece: a bomb stops at the size check.
                yield inflater.decompress(data, min(limit + 1, _CHUNK * 4))
            except zlib.error:
                raise BadRequest(f"Request body is not valid {encoding} data") from None
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    while inflater is not None and not inflater.eof:  # all read; what zlib may still hold (the
        # end of a back-reference across a piece's bound: the input consumed, the output not)
        piece = inflater.decompress(b"", _CHUNK * 4)
        if not piece:
            break
        yield piece
    if inflater is None or not inflater.eof:
        raise BadRequest(f"Request body is not valid {encoding} data (truncated)")


async def _read(request: web.Request, limit: int) -> bytearray:
    """The body, read into one buffer. On any error the buffer is emptied before the error
    leaves: the error's traceback holds this frame, and whatever keeps the error (a reference
    cycle through it, freed only by a full garbage collection) would keep the body too, its
    bytes already given back to the budget. (A 413 built before the read and kept in a local
    was such a cycle: each refused 1 GiB deflate bomb left 256 MiB behind.)"""
    plain = _encoding(request) is None
    if plain and request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    budget = request.app[BODY_BUDGET]
    request[STRANGER] = USER not in request and not request.get(KEY_CHECKED, False)
    body = bytearray()
    try:
        async for chunk in _chunks(request, limit):
            if len(body) + len(chunk) > limit:
                raise _too_large(limit)
            await budget.take(request, counted(len(body), len(chunk)))
            body += chunk
    except BaseException:
        body.clear()
        raise
    return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body larger than {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytearray:
    """The (inflated) request body; 413 past `limit` bytes, 408 past `server.body_timeout`."""
    timeout = request.app[CONFIG].server.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await _read(request, limit)
    except TimeoutError:
        raise RequestTimeout(f"Request body not received within {timeout:g} seconds") from None


async def hold_for_parsing(
    request: web.Request,
    body: bytes | bytearray,
    start: int = 0,
    end: int | None = None,
    plus: int = 0,
    wide: bool | None = None,
    pauses: Pauses | None = None,
) -> None:
    """Take from the budget what parsing `body` (or its bytes start:end: a large upload's
    largest page, parsed one at a time) as JSON will add in memory (budget.parse_cost, `wide`
    its look for wide text if made already; counted with `pauses` if given, for the whole
    body), and `plus` bytes more; 413 when that is more than the budget could ever give this
    request besides its body. A request holds the most it was asked for (a worker's body
    checked for its key, then parsed: once)."""
    budget = request.app[BODY_BUDGET]
    whole = await paused_parse_cost(body, pauses) if pauses else None
    cost = (parse_cost(body, start, end, wide) if whole is None else whole) + plus
    held = request.get(PARSE_HELD, 0)
    if cost <= held:
        return
    room = budget.room(request) - request[HELD] + held
    if cost > room:
        raise PayloadTooLarge(
            f"Request body too large once parsed (about {cost >> 20} MiB of objects; "
            f"at most {room >> 20} MiB)"
        )
    await budget.take(request, cost - held)
    request[PARSE_HELD] = cost
