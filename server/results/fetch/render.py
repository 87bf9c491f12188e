"""The `GET /results` body, spliced from stored page segments without parsing them.

The JSON envelope is written around the pages; each page segment is inflated (identity) or
passed through as is (gzip, see server/results/deflate.py). Bodies up to SINGLE_WRITE bytes are
assembled (large identity ones inflated on the inflater thread, server/results/fetch/inflating.py),
sent whole (server/results/fetch/writing.py: send_body) and kept in the body cache
(keyed by the page versions they are made of); larger ones are streamed with their exact length
as the pages are read a batch at a time, so memory stays flat whatever the size, or, for gzip
bodies of finished simulations, from their body file (server/results/caches/bodyfiles.py) once it is
written.
"""

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import NamedTuple

import orjson
from aiohttp import web

from server.limits.serving import drop_when_stalled
from server.models import Db
from server.results.caches.bodyfiles import BodyFiles
from server.results.caches.indexcache import BY_ESTIMATOR, PAGE_LIST, SINGLE_PAGE, Variant, View
from server.results.caches.lru import LruCache
from server.results.caches.pagecache import NOTHING_READ, PageCache, Read, Segment, segments
from server.results.deflate import GZIP_HEADER, GzipJoiner, crc_shift, inflate_pieces
from server.results.fetch import inflating
from server.results.fetch.writing import FLUSH_AT, send_body, stream
from server.store.results import PageRef

NO_DATA = Segment(b"", 0, crc_shift(0), 0)  # an empty page: what a body is without its pages

SINGLE_WRITE = 2 << 20


Pages = AsyncIterator[tuple[PageRef, Segment]]
Pieces = AsyncIterator[bytes | Segment]
# How the pages are wrapped: clear bytes around the page segments, in order.
Envelope = Callable[[Pages], Pieces]


def _opening(page: PageRef, after_another: bool) -> Iterator[bytes]:
    """The clear bytes that open the estimator of `page`: its name and its own fields, which
    may be of any size a worker sent: large ones a piece at a time (memory stays flat)."""
    start = (b"]}," if after_another else b"") + b'{"name":' + orjson.dumps(page.estimator) + b","
    fields = page.estimator_fields
    if len(fields) <= FLUSH_AT:
        yield start + fields + (b"," if fields else b"") + b'"pages":['
        return
    yield start
    for offset in range(0, len(fields), FLUSH_AT):
        yield fields[offset : offset + FLUSH_AT]
    yield b',"pages":['


async def by_estimator(pages: Pages) -> Pieces:
    """Clear bytes and page segments of `{"message":"Results","estimators":[...]}`."""
    yield b'{"message":"Results","estimators":['
    current = None
    async for page, segment in pages:
        if page.estimator != current:
            for piece in _opening(page, current is not None):
                yield piece
            current = page.estimator
        else:
            yield b","
        if page.page_number is not None:  # else an estimator without pages: only its opening
            yield segment
    yield b"]}]}" if current is not None else b"]}"


async def page_list(pages: Pages) -> Pieces:
    """`{"message":"Results","pages":[...]}`: the pages alone (the UI dialect's filtered form)."""
    yield b'{"message":"Results","pages":['
    first = True
    async for page, segment in pages:
        if page.page_number is None:
            continue
        if not first:
            yield b","
        first = False
        yield segment
    yield b"]}"


async def single_page(pages: Pages) -> Pieces:
    """`{"message":"Results","page":{...}}`, `null` without one (the UI's `page_number` form)."""
    yield b'{"message":"Results","page":'
    found = False
    async for page, segment in pages:
        if page.page_number is None:
            continue
        found = True
        yield segment
    yield b"}" if found else b"null}"


# Views name their envelope (server/results/caches/indexcache.py): a body is its form and its pages.
ENVELOPES: dict[str, Envelope] = {
    BY_ESTIMATOR: by_estimator,
    PAGE_LIST: page_list,
    SINGLE_PAGE: single_page,
}


async def identity(pages: Pages, envelope: Envelope) -> AsyncGenerator[bytes, None]:
    async for piece in envelope(pages):
        if isinstance(piece, Segment):
            for part in inflate_pieces(piece.data, FLUSH_AT):
                yield part
        else:
            yield piece


async def gzipped(pages: Pages, envelope: Envelope) -> AsyncGenerator[bytes, None]:
    """One gzip member: stored segments joined, clear pieces as stored blocks."""
    joiner = GzipJoiner()
    yield GZIP_HEADER
    async for piece in envelope(pages):
        if isinstance(piece, Segment):
            yield joiner.segment(piece.data, piece.crc32, piece.crc_shift, piece.raw_size)
        else:
            yield joiner.clear(piece)
    yield joiner.trailer()


async def assemble(pieces: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in pieces])


async def body_length(pages: tuple[PageRef, ...], envelope: Envelope, gzip: bool) -> int:
    """The exact length of the body of `pages` in `envelope`: its clear bytes (made without the
    page data) plus the stored or inflated size of every page."""

    async def without_data() -> Pages:
        for page in pages:
            yield page, NO_DATA

    pieces = (gzipped if gzip else identity)(without_data(), envelope)
    clear = sum([len(piece) async for piece in pieces])
    return clear + sum(page.stored_size if gzip else page.raw_size for page in pages)


class Stores(NamedTuple):
    """Where a body comes from (a process's, made per request by the handler)."""

    db: Db
    page_cache: PageCache
    bodies: LruCache[bytes]  # assembled bodies up to SINGLE_WRITE bytes
    inflater: Executor
    files: BodyFiles
    read: Read = NOTHING_READ  # pages this request read with the index


async def respond(
    request: web.Request, view: View, gzip: bool, stores: Stores
) -> web.StreamResponse:
    """The response for the pages of `view`: from the body cache, assembled, or streamed when
    large (from its body file when it has one). A body is fully determined by its form and its
    pages' estimators and versions: that is its cache key. A HEAD not answered from the cache
    reads no page: the body's length is worked out from the index."""
    db, page_cache, bodies, inflater, files, read = stores
    variant = view.gzip if gzip else view.identity
    cached = await from_cache(request, variant, bodies, read)
    if cached is not None:
        return cached
    drop_when_stalled(request)
    if request.method == "HEAD":
        length, _ = await _length_and_name(view, gzip, files)
        return web.Response(headers={**variant.headers, "Content-Length": str(length)})
    pages, envelope, size = view.pages, ENVELOPES[view.form], variant.size
    if size > SINGLE_WRITE:
        return await _stream_large(request, view, gzip, stores)
    stored = segments(db, page_cache, pages, streaming=False, read=read)
    if gzip or size < inflating.OFF_LOOP:
        body = await assemble((gzipped if gzip else identity)(stored, envelope))
    else:  # inflated in one call, off the event loop
        member = await assemble(gzipped(stored, envelope))
        body = await inflating.whole(member, inflater)
    bodies.put(variant.body_key, body, len(body))
    return await send_body(request, variant.headers, body)


async def from_cache(
    request: web.Request, variant: Variant, bodies: LruCache[bytes], read: Read = NOTHING_READ
) -> web.StreamResponse | None:
    """The answer of `variant` when the body cache has its body (the pages `read` with the
    index, not needed, are let go of first)."""
    body = bodies.get(variant.body_key)
    if body is None:
        return None
    read.clear()
    drop_when_stalled(request)
    return await send_body(request, variant.headers, body)


async def _stream_large(
    request: web.Request, view: View, gzip: bool, stores: Stores
) -> web.StreamResponse:
    """A body streamed from its file when it has one, else from its pages (and its file written
    in the background when it may have one)."""
    variant, files = (view.gzip if gzip else view.identity), stores.files
    length, name = await _length_and_name(view, gzip, files)
    if name is not None:
        file = files.open(name, length)
        if file is not None:
            stores.read.clear()  # not needed: let go of before the body is sent
            with file:  # also when the response fails before the reader has begun
                return await stream(
                    request,
                    variant.headers,
                    files.read(file, _pending(request)),
                    length,
                    gather=False,
                )
        files.write_soon(name, length, lambda: from_pages(view, gzip, stores))
    return await stream(request, variant.headers, from_pages(view, gzip, stores), length)


async def _length_and_name(view: View, gzip: bool, files: BodyFiles) -> tuple[int, str | None]:
    """The exact length of a body of `view` (streamed, or answered to a HEAD) and the name of
    its file (None: it may not have one), worked out once per view."""
    found = view.streamed.get(gzip)
    if found is None:
        length = await body_length(view.pages, ENVELOPES[view.form], gzip)
        found = view.streamed[gzip] = (length, _file_name(view, gzip, files))
    return found


def _pending(request: web.Request) -> Callable[[], int]:
    transport = request.transport
    return transport.get_write_buffer_size if transport is not None else lambda: 0


def _file_name(view: View, gzip: bool, files: BodyFiles) -> str | None:
    """The body file of `view` (None: it may not have one): finished, gzip and large only. Named
    by the body key and, beside the page versions, the pages' sizes (which a database restored
    from a backup, handing out versions again, would hardly give the same)."""
    size = view.gzip.size
    if not (gzip and view.final and size > SINGLE_WRITE and files.keeps(size)):
        return None
    sizes = tuple((page.stored_size, page.raw_size) for page in view.pages)
    return files.name(view.job_id, (view.gzip.body_key, sizes))


def from_pages(view: View, gzip: bool, stores: Stores) -> AsyncGenerator[bytes, None]:
    """The body of `view`, read from its stored pages a batch at a time."""
    stored = segments(stores.db, stores.page_cache, view.pages, streaming=True, read=stores.read)
    envelope = ENVELOPES[view.form]
    return gzipped(stored, envelope) if gzip else identity(stored, envelope)


async def write_file(view: View, stores: Stores) -> None:
    """Start writing the body file of `view` (gzip) if it may have one (and has none yet: the
    writer checks)."""
    files = stores.files
    length, name = await _length_and_name(view, True, files)
    if name is not None:
        files.write_soon(name, length, lambda: from_pages(view, True, stores))
