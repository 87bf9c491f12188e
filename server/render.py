"""The `GET /results` body, spliced from stored page segments without parsing them.

The JSON envelope is written around the pages; each page segment is inflated (identity) or
passed through as is (gzip, see server/deflate.py). Bodies up to SINGLE_WRITE bytes are
assembled and sent with one write; larger ones are streamed in FLUSH_AT pieces, so memory stays
flat whatever the size of the result.
"""

from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from server.deflate import GZIP_HEADER, GzipJoiner, inflate_segment
from server.pagecache import Segment

SINGLE_WRITE = 2 << 20
FLUSH_AT = 1 << 20


async def _json(pages: AsyncIterator[tuple[Any, Segment]]) -> AsyncIterator[tuple[bool, Any]]:
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


async def identity(pages: AsyncIterator[tuple[Any, Segment]]) -> AsyncIterator[bytes]:
    async for is_page, piece in _json(pages):
        yield inflate_segment(piece.data) if is_page else piece


async def gzipped(pages: AsyncIterator[tuple[Any, Segment]]) -> AsyncIterator[bytes]:
    """One gzip member: stored segments joined, clear pieces as stored blocks."""
    joiner = GzipJoiner()
    yield GZIP_HEADER
    async for is_page, piece in _json(pages):
        if is_page:
            yield joiner.segment(piece.data, piece.crc32, piece.crc_shift, piece.raw_size)
        else:
            yield joiner.clear(piece)
    yield joiner.trailer()


async def respond(
    request: web.Request, headers: dict[str, str], pieces: AsyncIterator[bytes], size: int
) -> web.StreamResponse:
    """Send the body: in one write when about `size` bytes fit SINGLE_WRITE, else streamed."""
    buffer = bytearray()
    if size <= SINGLE_WRITE:
        async for piece in pieces:
            buffer += piece
        return web.Response(body=buffer, headers=headers)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    async for piece in pieces:
        buffer += piece
        if len(buffer) >= FLUSH_AT:
            await response.write(bytes(buffer))
            buffer.clear()
    await response.write(bytes(buffer))
    await response.write_eof()
    return response
