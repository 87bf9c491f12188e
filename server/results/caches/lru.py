"""A bounded least-recently-used cache of values of a size the caller states, sized in bytes.

Used for stored page segments and for assembled response bodies, both keyed by page versions:
a rewritten page gets a new version, so a cached entry is never stale, only no longer asked
for (the caches are emptied when the database may have been replaced:
server/results/caches/changes.py); and for the names of an editor project's outputs, by
simulation (server/handlers/ui.py: inputs never change). Entries larger than a quarter of the cache are not kept.
"""

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class HashedKey(tuple[Hashable, ...]):
    """A tuple key whose hash is worked out once. A body's key names the version of every page
    in it, and a tuple hashes all its items again at each lookup: ~1 µs a fetch for 21 pages,
    ~40 µs for 1,000. Equal to (and written like) the plain tuple."""

    _hash: int

    def __new__(cls, items: tuple[Hashable, ...]) -> "HashedKey":
        key = super().__new__(cls, items)
        key._hash = tuple.__hash__(key)
        return key

    def __hash__(self) -> int:
        return self._hash


class LruCache(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` is kept (its use not renewed)."""
        return key in self._entries

    def put(self, key: Hashable, value: V, size: int) -> None:
        if size * 4 > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (value, size)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.size -= evicted

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0
