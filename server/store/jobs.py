"""The job state machine: row locks for worker writes and the state recomputed from tasks."""

from datetime import datetime

import asyncpg

from server.models import Db
from server.sql import query


async def lock_for_worker(conn: asyncpg.Connection, job_id: str) -> asyncpg.Record | None:
    """Lock the simulation row (inside a transaction); id, job_state, update_key_sha256."""
    return await conn.fetchrow(query("lock_simulation_for_worker"), job_id)


async def recompute_state(conn: asyncpg.Connection, simulation_id: int) -> str:
    """Set and return the job state its tasks and results justify (under the row lock)."""
    return await conn.fetchval(query("recompute_job_state"), simulation_id)


async def set_state(conn: asyncpg.Connection, simulation_id: int, state: str) -> None:
    """Set a job state directly (cancel, POST /jobs, recovery); end_time once terminal."""
    await conn.execute(query("set_job_state"), simulation_id, state)


async def get_state(db: Db, job_id: str) -> str | None:
    return await db.fetchval(query("get_job_state"), job_id)


async def list_interrupted(db: Db, before: datetime) -> list[str]:
    """job_ids of unfinished direct simulations submitted before `before`."""
    return [row["job_id"] for row in await db.fetch(query("list_interrupted_jobs"), before)]
