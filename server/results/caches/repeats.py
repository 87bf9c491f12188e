"""Repeated `GET /results` of finished results, answered with the least work.

Clients fetch the same finished results again and again (the UI reopening a simulation, scripts
polling). The first fetch works its query out in full (server/handlers/results.py): its job, its
owner, its filters, the encoding, the view and its variant. What it came to is remembered here,
by its raw query string and Accept-Encoding, so that a repeat is a lookup, then the body cache.
Under load, that full path was about a tenth of the time of a cached fetch of the fixture
(timed in the server; bench/HISTORY.md, 2026-12-02 16:20).

Only variants of views that trusted entries of the index cache keep (finished simulations, see
server/results/caches/indexcache.py) are remembered (a view made for one request weighs a key per
page), and only while the body cache holds their body (a repeat of a streamed body would miss
it). The index cache forgets a simulation's as soon as its entry leaves it (a change, a delete,
an eviction), and all of them when its change listener is lost, so that what is remembered is
what the full path would answer now. A repeat is answered only to the user who owns the
simulation, and only while the change listener's lease holds: the same rules as the full path,
checked as often.
A request with If-None-Match takes the full path (its answer may be a 304).
"""

from collections import OrderedDict
from collections.abc import KeysView
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from server.results.fetch import negotiation

if TYPE_CHECKING:  # (indexcache keeps the Repeats)
    from server.results.caches.indexcache import Variant

Key = tuple[str, str]  # the raw query string, and Accept-Encoding (its lines joined)


@dataclass(frozen=True, slots=True)
class Repeat:
    job_id: str
    user_id: int
    variant: "Variant"


class Repeats:
    """At most MAX_ENTRIES queries and what they came to, the least recently asked first out;
    a simulation's all forgotten at once."""

    MAX_ENTRIES = 1024
    MAX_KEY = 1024  # a longer query string or Accept-Encoding is never remembered

    def __init__(self) -> None:
        self._found: OrderedDict[Key, Repeat] = OrderedDict()
        self._keys: dict[str, set[Key]] = {}  # job_id -> the keys of its remembered queries

    @property
    def jobs(self) -> KeysView[str]:
        """The job_ids of what is remembered."""
        return self._keys.keys()

    def get(self, key: Key) -> Repeat | None:
        found = self._found.get(key)
        if found is not None:
            self._found.move_to_end(key)
        return found

    def put(self, key: Key, repeat: Repeat) -> None:
        self._discard(key)
        if len(self._found) >= self.MAX_ENTRIES:
            self._discard(next(iter(self._found)))
        self._found[key] = repeat
        self._keys.setdefault(repeat.job_id, set()).add(key)

    def forget(self, job_id: str) -> None:
        for key in self._keys.pop(job_id, ()):
            del self._found[key]

    def clear(self) -> None:
        self._found.clear()
        self._keys.clear()

    def _discard(self, key: Key) -> None:
        found = self._found.pop(key, None)
        if found is not None:
            keys = self._keys[found.job_id]
            keys.discard(key)
            if not keys:
                del self._keys[found.job_id]


def key_of(request: web.Request) -> Key | None:
    """What a request is remembered by; None when it is not (If-None-Match, or too long)."""
    headers = request.headers
    if "If-None-Match" in headers:
        return None
    query = request.rel_url.raw_query_string
    coding = negotiation.field(headers, "Accept-Encoding")
    if len(query) > Repeats.MAX_KEY or len(coding) > Repeats.MAX_KEY:
        return None
    return query, coding
