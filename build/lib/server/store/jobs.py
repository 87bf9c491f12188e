"""The job state machine: row locks for worker writes and the state recomputed from tasks."""

import asyncpg

from server.sql import query


async def lock_for_worker(conn: asyncpg.Connection, job_id: str) -> asyncpg.Record | None:
    """Lock the simulation row (inside a transaction); id, job_state, update_key_sha256."""
    return await conn.fetchrow(query("lock_simulation_for_worker"), job_id)


async def recompute_state(conn: asyncpg.Connection, simulation_id: int) -> str:
    """Set and return the job state its tasks and results justify (under the row lock)."""
    return await conn.fetchval(query("recompute_job_state"), simulation_id)
