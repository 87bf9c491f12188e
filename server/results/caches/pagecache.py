"""Stored page segments for `GET /results`: from the in-process cache or the database (read a
batch at a time, or with the results index when a fetch sends a whole small result).

Pages are cached by (estimator, page number, version); a rewritten page has a new version.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from server.errors import ServiceUnavailable
from server.models import Db
from server.results.caches.lru import LruCache
from server.store import results
from server.store.results import PageRef

PageKey = tuple[int, int | None, int]  # estimator_id, page_number, version


@dataclass(frozen=True, slots=True)
class Segment:
    data: bytes  # joinable raw deflate segment
    crc32: int
    crc_shift: int
    raw_size: int


PageCache = LruCache[Segment]
# Segments read with a results index (server/results/caches/indexcache.py) for one request: each is
# taken out as the body takes it, so that none is held while the body is sent.
Read = dict[PageKey, Segment]
NOTHING_READ: Read = {}  # (never added to)
CHANGED = "Results changed while they were read, retry"
NO_PAGE = Segment(b"", 0, 0, 0)  # what an estimator stored without pages comes with


class PagesChanged(Exception):
    """A page of a streamed body was rewritten or removed while the body was sent: the body
    must end there, with nothing more written (no closing brackets, no gzip trailer), so that
    no parser takes what was sent for a whole answer."""


# What a cached page takes besides its stored bytes (key, segment, the cache's bookkeeping):
# counted with them, so that a cache of tiny pages holds about its size, not many times it.
ENTRY_COST = 512

# Pages missing from the cache are read in batches of about this many stored bytes, so memory
# stays flat however large the result is.
BATCH_BYTES = 2 << 20
FIRST_BATCH = 256 << 10


def segments_of(records: list[asyncpg.Record]) -> dict[PageKey, Segment]:
    """The segments of page data rows (store.results.page_data's, or read_index's)."""
    return {
        (record["estimator_id"], record["page_number"], record["version"]): Segment(
            record["data"], record["crc32"], record["crc_shift"], record["raw_size"]
        )
        for record in records
    }


async def _load(
    db: Db, cache: PageCache, pages: Sequence[PageRef], keep: bool, read: Read
) -> dict[PageKey, Segment]:
    """The segments of `pages`: read with the index, from the cache, or in one query (those not
    from the cache cached if `keep`)."""
    found: dict[PageKey, Segment] = {}
    missing = []
    for page in pages:
        if page.page_number is None:  # an estimator without pages: no data to read
            continue
        taken, segment = read.pop(page.key, None), cache.get(page.key)
        if segment is not None:
            found[page.key] = segment
        elif taken is not None:
            found[page.key] = _kept(cache, page.key, taken, keep)
        else:
            missing.append(page)
    if missing:
        loaded = segments_of(await results.page_data(db, missing))
        found |= {key: _kept(cache, key, segment, keep) for key, segment in loaded.items()}
    return found


def _kept(cache: PageCache, key: PageKey, segment: Segment, keep: bool) -> Segment:
    if keep:
        cache.put(key, segment, len(segment.data) + ENTRY_COST)
    return segment


def _batches(pages: Sequence[PageRef], first: int) -> list[list[PageRef]]:
    """`pages` cut into runs of `first` stored bytes, doubling up to BATCH_BYTES (at least one
    page each): when streaming, the first pages are sent soon, the rest in few queries."""
    batches: list[list[PageRef]] = []
    size, budget = 0, min(first, BATCH_BYTES)
    for page in pages:
        if not batches or size + page.stored_size > budget:
            if batches:
                budget = min(budget * 2, BATCH_BYTES)
            batches.append([])
            size = 0
        batches[-1].append(page)
        size += page.stored_size
    return batches


async def _read_ahead(
    db: Db, cache: PageCache, batches: list[list[PageRef]], keep: bool, read: Read
) -> AsyncGenerator[tuple[list[PageRef], dict[PageKey, Segment]], None]:
    """Each batch with its segments; the next one is read while the caller sends this one (at
    most two batches in memory)."""

    def load(batch: list[PageRef]) -> asyncio.Future[dict[PageKey, Segment]]:
        return asyncio.ensure_future(_load(db, cache, batch, keep, read))

    pending = load(batches[0]) if batches else None
    try:
        for number, batch in enumerate(batches):
            assert pending is not None
            loaded = await pending
            following = batches[number + 1] if number + 1 < len(batches) else None
            pending = load(following) if following else None
            yield batch, loaded
    finally:
        if pending is not None:  # the client went away: do not read on
            pending.cancel()


async def segments(
    db: Db, cache: PageCache, pages: Sequence[PageRef], streaming: bool, read: Read = NOTHING_READ
) -> AsyncIterator[tuple[PageRef, Segment]]:
    """(page, segment) in the order of `pages`, loading a batch of pages at a time (those in
    `read`, read with the index, are not read again).

    A page rewritten since the index was read has a new version: the pages end there (the
    pages read so far may be from before the upload that rewrote it, so the body must not be
    completed): a streamed body raises PagesChanged, on which writing.stream closes the
    connection (or answers 503 when nothing was sent yet), and an assembled one, of which
    nothing was sent yet, is a 503 the client retries (it is not cached either).
    Pages of a result larger than a quarter of the cache are not kept (like any entry that
    large): one pass over them would only push out everything else, and memory stays flat."""
    keep = sum(page.stored_size + ENTRY_COST for page in pages) * 4 <= cache.max_bytes
    batches = _batches(pages, FIRST_BATCH if streaming else BATCH_BYTES)
    async with contextlib.aclosing(_read_ahead(db, cache, batches, keep, read)) as loaded_batches:
        async for batch, loaded in loaded_batches:
            for page in batch:
                if page.page_number is None:
                    yield page, NO_PAGE
                    continue
                segment = loaded.get(page.key)
                if segment is None and streaming:  # rewritten meanwhile: never torn
                    raise PagesChanged(CHANGED)
                if segment is None:  # nothing sent yet: the client asks again, never torn
                    raise ServiceUnavailable(CHANGED, retry_after=1)
                yield page, segment
            del loaded  # sent: not kept while the batch after next is read
