"""The `GET /results` body, spliced from stored page segments without parsing them.

The JSON envelope is written around the pages; each page segment is inflated (identity) or
passed through as is (gzip, see server/deflate.py). Bodies up to SINGLE_WRITE bytes are
assembled, sent with one write and kept in the body cache (keyed by the page versions they are
made of); larger ones are streamed in FLUSH_AT pieces, so memory stays flat whatever the size.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from server.deflate import GZIP_HEADER, GzipJoiner, inflate_segment
from server.pagecache import Segment

SINGLE_WRITE = 2 << 20
FLUSH_AT = 1 << 20


Pieces = AsyncIterator[tuple[bool, Any]]
Envelope = Callable[[AsyncIterator[tuple[Any, Segment]]], Pieces]


async def by_estimator(pages: AsyncIterator[tuple[Any, Segment]]) -> Pieces:
    """(is_page, clear bytes or Segment) pieces of `{"message":"Results","estimators":[...]}`."""
    yield False, b'{"message":"Results","estimators":['
    current = None
    async for row, segment in pages:
        if row["estimator"] != current:
            opening = b'{"name":' + orjson.dumps(row["estimator"]) + b',"pages":['
            yield False, (b"]}," if current is not None else b"") + opening
            current = row["estimator"]
        else:
            yield False, b","
        yield True, segment
    yield False, b"]}]}" if current is not None else b"]}"


async def page_list(pages: AsyncIterator[tuple[Any, Segment]]) -> Pieces:
    """`{"message":"Results","pages":[...]}`: the pages alone (the UI dialect's filtered form)."""
    yield False, b'{"message":"Results","pages":['
    first = True
    async for _, segment in pages:
        if not first:
            yield False, b","
        first = False
        yield True, segment
    yield False, b"]}"


async def single_page(pages: AsyncIterator[tuple[Any, Segment]]) -> Pieces:
    """`{"message":"Results","page":{...}}`, `null` without one (the UI's `page_number` form)."""
    yield False, b'{"message":"Results","page":'
    found = False
    async for _, segment in pages:
        found = True
        yield True, segment
    yield False, b"}" if found else b"null}"


async def identity(
    pages: AsyncIterator[tuple[Any, Segment]], envelope: Envelope = by_estimator
) -> AsyncIterator[bytes]:
    async for is_page, piece in envelope(pages):
        yield inflate_segment(piece.data) if is_page else piece


async def gzipped(
    pages: AsyncIterator[tuple[Any, Segment]], envelope: Envelope = by_estimator
) -> AsyncIterator[bytes]:
    """One gzip member: stored segments joined, clear pieces as stored blocks."""
    joiner = GzipJoiner()
    yield GZIP_HEADER
    async for is_page, piece in envelope(pages):
        if is_page:
            yield joiner.segment(piece.data, piece.crc32, piece.crc_shift, piece.raw_size)
        else:
            yield joiner.clear(piece)
    yield joiner.trailer()


async def assemble(pieces: AsyncIterator[bytes]) -> bytes:
    buffer = bytearray()
    async for piece in pieces:
        buffer += piece
    return bytes(buffer)


async def stream(
    request: web.Request, headers: dict[str, str], pieces: AsyncIterator[bytes]
) -> web.StreamResponse:
    """A chunked response written FLUSH_AT bytes at a time."""
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    buffer = bytearray()
    async for piece in pieces:
        buffer += piece
        if len(buffer) >= FLUSH_AT:
            await response.write(bytes(buffer))
            buffer.clear()
    await response.write(bytes(buffer))
    await response.write_eof()
    return response
