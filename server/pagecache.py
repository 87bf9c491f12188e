"""A bounded in-process cache of stored page bytes, keyed by page and version.

Stored pages only change by being rewritten, which gives them a new version, so a cached entry
is never stale: it is simply no longer asked for. Pages larger than a quarter of the cache are
not kept, and the least recently used entries go first.
"""

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.models import Db
from server.store import results

PageKey = tuple[int, int, int]  # estimator_id, page_number, version


@dataclass(frozen=True, slots=True)
class Segment:
    data: bytes  # joinable raw deflate segment
    crc32: int
    crc_shift: int
    raw_size: int


class PageCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[PageKey, Segment] = OrderedDict()

    def get(self, key: PageKey) -> Segment | None:
        segment = self._entries.get(key)
        if segment is not None:
            self._entries.move_to_end(key)
        return segment

    def put(self, key: PageKey, segment: Segment) -> None:
        if len(segment.data) * 4 > self.max_bytes or key in self._entries:
            return
        self._entries[key] = segment
        self.size += len(segment.data)
        while self.size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.data)


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
            cache.put(_key(record), segment)
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
