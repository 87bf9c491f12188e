"""Repeated `GET /results` of finished results, answered with the least work.

Clients fetch the same finished results again and again (the UI reopening a simulation, scripts
polling). The first fetch works its query out in full (server/handlers/results.py): its job, its
owner, its filters, the encoding, the view and its variant. What it came to is remembered here,
by its raw query string and Accept-Encoding, so that a repeat is a lookup, then the body cache.
Under load, that full path was about a tenth of the time of a cached fetch of the fixture
(timed in the server; bench/HISTORY.md, 2026-12-02 16:20).

Only variants of views that trusted entries of the index cache keep (finished simulations, see
server/results/indexcache.py) are remembered (a view made for one request weighs a key per
page), and the index cache forgets them all as soon as one of their entries leaves it
(a change, a delete, an eviction, a lost change listener), so that what is remembered is what the
full path would answer now. A repeat is answered only to the user who owns the simulation, and
only while the change listener's lease holds: the same rules as the full path, checked as often.
A request with If-None-Match takes the full path (its answer may be a 304).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from server.results import negotiation

if TYPE_CHECKING:  # (indexcache keeps the Repeats)
    from server.results.indexcache import Variant

Key = tuple[str, str]  # the raw query string, and Accept-Encoding (its lines joined)


@dataclass(frozen=True, slots=True)
class Repeat:
    job_id: str
    user_id: int
    variant: "Variant"


class Repeats:
    """At most MAX_ENTRIES queries and what they came to (all forgotten when full)."""

    MAX_ENTRIES = 1024
    MAX_KEY = 1024  # a longer query string or Accept-Encoding is never remembered

    def __init__(self) -> None:
        self._found: dict[Key, Repeat] = {}
        self.jobs: set[str] = set()  # the job_ids of what is remembered

    def get(self, key: Key) -> Repeat | None:
        return self._found.get(key)

    def put(self, key: Key, repeat: Repeat) -> None:
        if len(self._found) >= self.MAX_ENTRIES:
            self.clear()
        self._found[key] = repeat
        self.jobs.add(repeat.job_id)

    def clear(self) -> None:
        self._found.clear()
        self.jobs.clear()


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
