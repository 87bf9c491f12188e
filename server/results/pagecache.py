"""Stored page segments for `GET /results`: from the in-process cache or the database.

Pages are cached by (estimator, page number, version); a rewritten page has a new version.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from server.models import Db
from server.results.lru import LruCache
from server.store import results
from server.store.results import PageRef

PageKey = tuple[int, int, int]  # estimator_id, page_number, version


@dataclass(frozen=True, slots=True)
class Segment:
    data: bytes  # joinable raw deflate segment
    crc32: int
    crc_shift: int
    raw_size: int


PageCache = LruCache[Segment]


# Pages missing from the cache are read in batches of about this many stored bytes, so memory
# stays flat however large the result is.
BATCH_BYTES = 4 << 20


def _key(record: asyncpg.Record) -> PageKey:
    return (record["estimator_id"], record["page_number"], record["version"])


async def _load(db: Db, cache: PageCache, pages: list[PageRef]) -> dict[PageKey, Segment]:
    """The segments of `pages`, from the cache or in one query (new ones are cached)."""
    found: dict[PageKey, Segment] = {}
    missing = []
    for page in pages:
        segment = cache.get(page.key)
        if segment is None:
            missing.append(page)
        else:
            found[page.key] = segment
    if missing:
        for record in await results.page_data(db, missing):
            segment = Segment(
                record["data"], record["crc32"], record["crc_shift"], record["raw_size"]
            )
            found[_key(record)] = segment
            cache.put(_key(record), segment, len(segment.data))
    return found


def _batches(pages: list[PageRef]) -> list[list[PageRef]]:
    """`pages` cut into runs of about BATCH_BYTES stored bytes (at least one page each)."""
    batches: list[list[PageRef]] = []
    size = 0
    for page in pages:
        if not batches or size + page.stored_size > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(page)
        size += page.stored_size
    return batches


async def segments(
    db: Db, cache: PageCache, pages: list[PageRef]
) -> AsyncIterator[tuple[PageRef, Segment]]:
    """(page, segment) in the order of `pages`, loading a batch of pages at a time.

    A page rewritten since the index was read has a new version: it is read again, current."""
    for batch in _batches(pages):
        loaded = await _load(db, cache, batch)
        for page in batch:
            segment = loaded.get(page.key)
            if segment is None:  # rewritten meanwhile: take the current version
                segment = next(iter((await _load(db, cache, [page])).values()), None)
            if segment is not None:
                yield page, segment
