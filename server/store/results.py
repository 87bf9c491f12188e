"""Results storage: estimators and pages, written once per upload and streamed on fetch."""

from collections.abc import AsyncIterator

import asyncpg

from server.models import Db
from server.pages import StoredEstimator
from server.sql import query

# Pages fetched per round trip while streaming: bounds memory for very large results.
PREFETCH = 64


async def save(
    conn: asyncpg.Connection, simulation_id: int, estimators: list[StoredEstimator]
) -> None:
    """Upsert estimators (in upload order) and their pages; call inside the upload transaction."""
    if not estimators:
        return
    rows = await conn.fetch(
        query("upsert_estimators"),
        simulation_id,
        [estimator.name for estimator in estimators],
        list(range(len(estimators))),
    )
    ids = {row["name"]: row["id"] for row in rows}
    pages = [(ids[e.name], page) for e in estimators for page in e.pages]
    if not pages:
        return
    await conn.execute(
        query("upsert_pages"),
        [estimator_id for estimator_id, _ in pages],
        [page.page_number for _, page in pages],
        [page.name for _, page in pages],
        ["{" + ",".join(map(str, page.dimensions)) + "}" for _, page in pages],
        [page.data for _, page in pages],
        [page.crc32 for _, page in pages],
        [page.crc_shift for _, page in pages],
        [page.raw_size for _, page in pages],
    )


async def head(db: Db, job_id: str, estimator: str | None) -> asyncpg.Record | None:
    """id, user_id, job_state, end_time, has_results, has_estimator of a job (or None)."""
    return await db.fetchrow(query("results_head"), job_id, estimator)


async def stream_pages(
    conn: asyncpg.Connection, simulation_id: int, estimator: str | None, numbers: list[int] | None
) -> AsyncIterator[asyncpg.Record]:
    """(estimator, data, crc32, crc_shift, raw_size) rows in display order, a batch at a time.

    Needs a transaction (server-side cursor)."""
    statement = query("result_pages")
    async for row in conn.cursor(statement, simulation_id, estimator, numbers, prefetch=PREFETCH):
        yield row


async def estimators_of(db: Db, job_id: str) -> list[asyncpg.Record]:
    """user_id, estimator, page_number, name, dimensions per page; [] for an unknown job."""
    return await db.fetch(query("estimators_of_job"), job_id)
