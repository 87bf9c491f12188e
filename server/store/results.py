"""The estimators and pages tables (a simulation's results): written once per upload, read by
index (no page data) and by page data a batch at a time."""

from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from server.database.sql import query
from server.models import Conn, Db, StoredEstimator, StoredPage
from server.store.simulations import ResultsHead, results_head_of


class PageRef(NamedTuple):
    """A stored page, without its data: what a response needs to splice it in (a named tuple:
    an index of many pages is built on every uncached fetch). An estimator stored without pages
    has one with page_number None and no data: it is shown, with `"pages": []`."""

    estimator: str
    estimator_id: int
    page_number: int | None
    version: int
    stored_size: int
    raw_size: int
    estimator_fields: bytes = b""

    @property
    def key(self) -> tuple[int, int | None, int]:
        """Identifies the stored bytes: a rewritten page gets a new version."""
        return (self.estimator_id, self.page_number, self.version)


@dataclass(frozen=True, slots=True)
class ResultsIndex:
    """A simulation's whole results without page data: what `GET /results` checks and the pages
    it may send, in display order."""

    head: ResultsHead
    estimators: frozenset[str]  # every stored estimator, also those without pages
    pages: tuple[PageRef, ...]  # with one (page_number None) for each estimator without pages
    fields_size: int = 0  # bytes of the estimators' own fields (any size a worker sent)
    job_id: str = ""

    @property
    def user_id(self) -> int:
        return self.head.user_id


async def save(conn: Conn, sim_pk: int, estimators: list[StoredEstimator]) -> None:
    """Upsert estimators (in upload order) and their pages; call inside the upload transaction."""
    if not estimators:
        return
    rows = await conn.fetch(
        query("upsert_estimators"),
        sim_pk,
        [estimator.name for estimator in estimators],
        [estimator.fields for estimator in estimators],
    )
    ids = {row["name"]: row["id"] for row in rows}
    pages = [(ids[e.name], page) for e in estimators for page in e.pages]
    for batch in _batches(pages):
        await conn.execute(
            query("upsert_pages"),
            [estimator_id for estimator_id, _ in batch],
            [page.page_number for _, page in batch],
            [page.name for _, page in batch],
            ["{" + ",".join(map(str, page.dimensions)) + "}" for _, page in batch],
            [page.data for _, page in batch],
            [page.crc32 for _, page in batch],
            [page.crc_shift for _, page in batch],
            [page.raw_size for _, page in batch],
        )


# Stored bytes of pages per statement: asyncpg encodes a statement's arguments in one go, on the
# event loop (a quarter of a second for the 140 MB of a 425 MB result).
SAVE_BATCH = 8 << 20


def _batches(pages: list[tuple[int, StoredPage]]) -> list[list[tuple[int, StoredPage]]]:
    batches: list[list[tuple[int, StoredPage]]] = []
    size = 0
    for item in pages:
        if not batches or size + len(item[1].data) > SAVE_BATCH:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += len(item[1].data)
    return batches


async def count(conn: Conn, sim_pk: int) -> int:
    """How many estimators and pages the simulation holds."""
    found: int = await conn.fetchval(query("count_results"), sim_pk)
    return found


def _page(row: asyncpg.Record, fields: dict[int, bytes]) -> PageRef:
    return PageRef(
        row["estimator"],
        row["estimator_id"],
        row["page_number"],
        row["version"] or 0,
        row["stored_size"] or 0,
        row["raw_size"] or 0,
        fields[row["estimator_id"]],
    )


@dataclass(frozen=True, slots=True)
class IndexRead:
    index: ResultsIndex
    pages: list[asyncpg.Record]  # the pages' data, as page_data gives it, if read too


async def read_index(db: Db, job_id: str, data_up_to: int = 0) -> IndexRead | None:
    """The results index of a job (None for an unknown job) and, when its pages come to
    `data_up_to` stored bytes at most together, their data (else none): in one query."""
    rows = await db.fetch(query("results_index"), job_id, data_up_to)
    if not rows:
        return None
    pages = [row for row in rows if row["data"] is not None]
    return IndexRead(_index(job_id, rows), pages)


def _index(job_id: str, rows: list[asyncpg.Record]) -> ResultsIndex:
    # each estimator's fields come on one of its rows only: its pages share that one value
    fields = {
        row["estimator_id"]: row["estimator_fields"]
        for row in rows
        if row["estimator_fields"] is not None
    }
    return ResultsIndex(
        head=results_head_of(rows[0]),
        estimators=frozenset(row["estimator"] for row in rows if row["estimator"] is not None),
        pages=tuple(_page(row, fields) for row in rows if row["estimator"] is not None),
        fields_size=sum(len(value) for value in fields.values()),
        job_id=job_id,
    )


async def page_data(db: Db, pages: list[PageRef]) -> list[asyncpg.Record]:
    """estimator_id, page_number, version, data, crc32, crc_shift, raw_size of some pages."""
    return await db.fetch(
        query("page_data"),
        [page.estimator_id for page in pages],
        [page.page_number for page in pages],
    )


@dataclass(frozen=True, slots=True)
class EstimatorsOf:
    """A simulation's owner and its estimators' pages without data (estimator, page_number,
    name, dimensions per row; an estimator with no page has one row with page_number NULL)."""

    user_id: int
    rows: list[asyncpg.Record]


async def estimators_of(db: Db, job_id: str) -> EstimatorsOf | None:
    """None for an unknown job."""
    rows = await db.fetch(query("estimators_of_job"), job_id)
    if not rows:
        return None
    return EstimatorsOf(rows[0]["user_id"], [row for row in rows if row["estimator"] is not None])
