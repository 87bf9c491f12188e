"""Results storage: estimators and pages, written once per upload and streamed on fetch."""

import asyncpg

from server.models import Db
from server.pages import StoredEstimator
from server.sql import query


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


async def index(
    db: Db, job_id: str, estimator: str | None, numbers: list[int] | None
) -> list[asyncpg.Record]:
    """One row per matching page (see the results_index query); [] for an unknown job."""
    return await db.fetch(query("results_index"), job_id, estimator, numbers)


async def page_data(db: Db, keys: list[tuple[int, int]]) -> list[asyncpg.Record]:
    """estimator_id, page_number, version, data, crc32, crc_shift, raw_size of some pages."""
    return await db.fetch(query("page_data"), [key[0] for key in keys], [key[1] for key in keys])


async def estimators_of(db: Db, job_id: str) -> list[asyncpg.Record]:
    """user_id, estimator, page_number, name, dimensions per page; [] for an unknown job."""
    return await db.fetch(query("estimators_of_job"), job_id)
