"""Per-process memory of results indexes, so that `GET /results` asks the database at most one
small question, and none for a finished simulation.

An entry is a simulation's whole results index (owner, state, `results_version`, every page
reference), keyed by job_id, with the filtered views asked for so far. The results of a
finished simulation never change (its update key is dead), so its entry is *trusted*: served
without asking the database while this process holds a lease from its change listener
(server/results/caches/changes.py), which removes the entry when any process deletes or changes the
simulation. Any other entry is checked on every request against the simulation's row (one row:
owner, state, results version), so a fetch after an acknowledged upload sees that upload.

An entry read while a change notification for it may have been in flight is never trusted: every
notification is numbered, and an entry becomes trusted only when no notification about its
simulation arrived since the read began (`mark`/`changed_since`).

What queries answered from trusted entries came to is kept here too (`repeat`/`remember`,
server/results/caches/repeats.py), and forgotten as soon as their entry is dropped.
"""

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

from server.jobs.states import TERMINAL_STATES
from server.models import Db
from server.results.caches.heads import HeadReader
from server.results.caches.lru import HashedKey
from server.results.caches.pagecache import NOTHING_READ, Read, segments_of
from server.results.caches.repeats import Key, Repeat, Repeats
from server.results.fetch import negotiation
from server.store import results
from server.store.results import PageRef, ResultsIndex

MAX_VIEWS = 16  # views remembered per simulation (distinct filters and body forms)
MAX_VIEW_NUMBERS = 64  # a view is remembered only if its filter names this many pages at most
# ...and only while the views remembered hold at most this many times the index's pages (plus
# MAX_VIEW_NUMBERS): a filter of few numbers but no estimator keeps that page of every
# estimator, so 16 such views held ten times the memory of their index.
VIEW_PAGES_PER_PAGE = 2
# The forms of a body (server/results/fetch/render.py ENVELOPES): the API's, and the UI dialect's
# filtered ones (a list of pages, or one page).
BY_ESTIMATOR, PAGE_LIST, SINGLE_PAGE = "by_estimator", "page_list", "single_page"
Filters = tuple[str | None, tuple[int, ...] | None, str]  # estimator, page numbers, form


@dataclass(frozen=True, slots=True)
class Variant:
    """One representation (identity or gzip) of a view: its body's key in the body cache, its
    ETag (finished simulations only) and its response headers, made once."""

    body_key: Hashable
    etag: str | None
    headers: dict[str, str]
    size: int  # about how large its body is (body_size): whether it is streamed


@dataclass(frozen=True, slots=True)
class View:
    """Some pages of a simulation in one body form, and the two ways of sending them."""

    pages: tuple[PageRef, ...]
    estimator_found: bool  # the estimator named by the filter exists (True without one)
    form: str  # how the pages are wrapped: a name of render.ENVELOPES
    identity: Variant
    gzip: Variant
    job_id: str
    final: bool  # the simulation finished: its pages can no longer change
    # A streamed body's exact length and file name (server/results/fetch/render.py), by gzip, once.
    streamed: dict[bool, tuple[int, str | None]] = field(default_factory=dict, compare=False)


def make_view(
    index: ResultsIndex, pages: tuple[PageRef, ...], found: bool, form: str, selection: Hashable
) -> View:
    """A view of `pages` (of `index`), chosen by `selection` (the filters, or how the caller
    chose them). Its body is identified by its form, the page versions and the results version
    (an upload may change only estimator-level fields, which pages lack); its ETag, cheaper, by
    the results version and the selection (every upload gets a new results version)."""
    keys = tuple((page.estimator, page.key) for page in pages)
    body = (form, index.head.results_version, keys)
    identity, gzip = (
        _variant(index, pages, body, (form, selection), gzip) for gzip in (False, True)
    )
    final = index.head.job_state in TERMINAL_STATES
    return View(pages, found, form, identity, gzip, index.job_id, final)


def _variant(
    index: ResultsIndex,
    pages: tuple[PageRef, ...],
    body: Hashable,
    selection: Hashable,
    gzip: bool,
) -> Variant:
    etag = negotiation.etag_for(index.head, selection, gzip)
    headers = negotiation.headers_for(etag, gzip)
    return Variant(HashedKey((gzip, body)), etag, headers, body_size(pages, gzip))


def body_size(pages: tuple[PageRef, ...], gzip: bool) -> int:
    """About how large the body of `pages` is: the pages as stored (gzip) or inflated, and the
    fields of their estimators (each estimator's once), which may be of any size."""
    fields = {page.estimator: len(page.estimator_fields) for page in pages}
    stored = sum(page.stored_size if gzip else page.raw_size for page in pages)
    return stored + sum(fields.values())


def select(index: ResultsIndex, filters: Filters) -> View:
    """The pages of `index` that the filters (estimator name, page numbers) keep, in order."""
    estimator, numbers, form = filters
    wanted = None if numbers is None else set(numbers)
    pages = tuple(
        page
        for page in index.pages
        if (estimator is None or page.estimator == estimator)
        and (wanted is None or page.page_number in wanted)
    )
    found = estimator is None or estimator in index.estimators
    return make_view(index, pages, found, form, filters)


@dataclass(slots=True)
class Entry:
    index: ResultsIndex
    trusted: bool  # finished, and no change notification missed since it was read
    views: dict[Filters, View] = field(default_factory=dict)
    view_pages: int = 0  # the pages the remembered views hold, together

    @property
    def user_id(self) -> int:
        return self.index.head.user_id

    @property
    def has_results(self) -> bool:
        return bool(self.index.estimators)

    def view(
        self, estimator: str | None, numbers: list[int] | None, form: str = BY_ESTIMATOR
    ) -> View:
        filters = (estimator, None if numbers is None else tuple(numbers), form)
        found = self.views.get(filters)
        if found is None:
            found = select(self.index, filters)
            # (a spec like 0-9999 names 10,000 pages: such a filter is not kept as a key)
            small = numbers is None or len(numbers) <= MAX_VIEW_NUMBERS
            if small and len(self.views) < MAX_VIEWS and self._room_for(found):
                self.views[filters] = found
                self.view_pages += len(found.pages)
        return found

    def keeps(self, view: View) -> bool:
        return any(kept is view for kept in self.views.values())

    def _room_for(self, view: View) -> bool:
        """Whether the remembered views, with `view`, hold no more than their budget of pages."""
        budget = VIEW_PAGES_PER_PAGE * len(self.index.pages) + MAX_VIEW_NUMBERS
        return self.view_pages + len(view.pages) <= budget


class Found(NamedTuple):
    entry: Entry
    pages: Read  # the data of pages read with the index (IndexCache.read), else nothing

    @property
    def user_id(self) -> int:
        return self.entry.user_id


class IndexCache:
    """At most `max_entries` entries holding `max_pages` page references together (an entry
    weighs its index's pages; its views add at most twice as many), least recently used first
    out; an index of more than a quarter of `max_pages` is not kept; 0 keeps none."""

    FORGET_AFTER = 10_000  # job_ids of notifications remembered for `changed_since`

    def __init__(self, max_entries: int, max_pages: int = 200_000) -> None:
        self.max_entries = max_entries
        self.max_pages = max_pages
        self.pages = 0  # the weight of the entries kept, together
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._events = 0  # change notifications so far (and reconnections of the listener)
        self._changed: dict[str, int] = {}  # job_id -> number of its latest notification
        self._forgotten = 0  # `_changed` knows nothing of notifications up to this number
        self._lease_until = 0.0  # monotonic time until which trusted entries may be served
        self.heads = HeadReader()
        self.repeats = Repeats()  # what repeated queries of trusted entries came to

    # the change listener's side

    def changed(self, job_id: str) -> None:
        """A notification (or this process's own delete): the simulation was deleted or changed."""
        self._events += 1
        self._drop(job_id)
        if len(self._changed) >= self.FORGET_AFTER:
            self._changed.clear()
            self._forgotten = self._events - 1
        self._changed[job_id] = self._events

    def distrust(self) -> None:
        """The listener (re)connected or failed: notifications may have been missed."""
        self._events += 1
        self._forgotten = self._events
        self._changed.clear()
        self._entries.clear()
        self.repeats.clear()
        self.pages = 0
        self._lease_until = 0.0

    def renew(self, until: float) -> None:
        """The listener's connection answered a ping sent at `until - lease`."""
        self._lease_until = max(self._lease_until, until)

    def mark(self) -> int:
        return self._events

    def changed_since(self, job_id: str, mark: int) -> bool:
        return self._changed.get(job_id, self._forgotten) > mark

    # the request side

    async def get(self, db: Db, job_id: str) -> Entry | None:
        found = await self.read(db, job_id)
        return None if found is None else found.entry

    async def read(self, db: Db, job_id: str, data_up_to: int = 0) -> Found | None:
        """The current index of a job (None: unknown job): from memory when trusted, else
        after checking its row, else read whole, then with the data of its pages if they come
        to `data_up_to` stored bytes at most (for the caller alone: never kept here)."""
        entry = self._entries.get(job_id)
        if entry is not None and entry.trusted and time.monotonic() < self._lease_until:
            self._entries.move_to_end(job_id)
            return Found(entry, NOTHING_READ)
        mark = self.mark()
        if entry is not None:
            head = await self.heads.get(db, job_id)
            if head is None:
                self._drop(job_id)
                return None
            if head == entry.index.head:
                entry.trusted = self._trustworthy(entry.index, job_id, mark)
                return Found(entry, NOTHING_READ)
        read = await results.read_index(db, job_id, data_up_to)
        if read is None:
            return None
        entry = Entry(read.index, self._trustworthy(read.index, job_id, mark))
        self._put(job_id, entry)
        return Found(entry, segments_of(read.pages))

    def repeat(self, key: Key, user_id: int) -> Variant | None:
        """What a query answered from a trusted entry came to (server/results/caches/repeats.py),
        asked again by the simulation's owner while the lease holds and the entry is still
        trusted; None: work it out in full."""
        found = self.repeats.get(key)
        if found is None or found.user_id != user_id or time.monotonic() >= self._lease_until:
            return None
        entry = self._entries.get(found.job_id)  # kept: dropping it forgets the repeats
        if entry is None or not entry.trusted:  # (a full fetch may have found it untrustworthy)
            return None
        self._entries.move_to_end(found.job_id)
        return found.variant

    def remember(self, key: Key, entry: Entry, view: View, gzip: bool) -> None:
        """Remember what a query came to, if from a view the entry keeps (so that what is
        remembered weighs nothing more) of a trusted entry that is still kept."""
        job_id = entry.index.job_id
        if entry.trusted and self._entries.get(job_id) is entry and entry.keeps(view):
            variant = view.gzip if gzip else view.identity
            self.repeats.put(key, Repeat(job_id, entry.user_id, variant))

    def _trustworthy(self, index: ResultsIndex, job_id: str, mark: int) -> bool:
        finished = index.head.job_state in TERMINAL_STATES
        return finished and not self.changed_since(job_id, mark)

    def _put(self, job_id: str, entry: Entry) -> None:
        self._drop(job_id)
        if self.max_entries <= 0 or _weight(entry) * 4 > self.max_pages:
            return
        self._entries[job_id] = entry
        self.pages += _weight(entry)
        while len(self._entries) > self.max_entries or self.pages > self.max_pages:
            self._drop(next(iter(self._entries)))

    def _drop(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self.pages -= _weight(entry)
        self.repeats.forget(job_id)


# An index holds its estimators' own fields too, of any size a worker sent: they count as one
# page reference (about 300 bytes, README) for every this many bytes.
FIELD_BYTES_PER_PAGE = 300


def _weight(entry: Entry) -> int:
    """What an entry counts against `max_pages`: its index's pages (one at least), and its
    estimators' fields."""
    return max(len(entry.index.pages), 1) + entry.index.fields_size // FIELD_BYTES_PER_PAGE
