"""Stored page segments for `GET /results`: from the in-process cache or the database.

Pages are cached by (estimator, page number, version); a rewritten page has a new version.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.lru import LruCache
from server.models import Db
from server.store import results

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


def _key(row: Any) -> PageKey:
    return (row["estimator_id"], row["page_number"], row["version"])


async def _load(db: Db, cache: PageCache, rows: list[Any]) -> dict[PageKey, Segment]:
    """The segments of `rows`, from the cache or in one query (new ones are cached)."""
    found: dict[PageKey, Segment] = {}
    missing = []
    for row in rows:
        segment = cache.get(_key(row))
        if segment is None:
            missing.append((row["estimator_id"], row["page_number"]))
        else:
            found[_key(row)] = segment
    if missing:
        for record in await results.page_data(db, missing):
            segment = Segment(
                record["data"], record["crc32"], record["crc_shift"], record["raw_size"]
            )
            found[_key(record)] = segment
            cache.put(_key(record), segment, len(segment.data))
    return found


async def segments(db: Db, cache: PageCache, rows: list[Any]) -> AsyncIterator[tuple[Any, Segment]]:
    """(index row, segment) in the order of `rows`, loading a batch of pages at a time.

    A page rewritten since the index was read has a new version: it is read again, current."""
    start = 0
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and (end == start or size + rows[end]["stored_size"] <= BATCH_BYTES):
            size += rows[end]["stored_size"]
            end += 1
        batch = rows[start:end]
        loaded = await _load(db, cache, batch)
        for row in batch:
            segment = loaded.get(_key(row))
            if segment is None:  # rewritten meanwhile: take the current version
                segment = next(iter((await _load(db, cache, [row])).values()), None)
            if segment is not None:
                yield row, segment
        start = end
