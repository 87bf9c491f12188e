"""Tasks: the status users see, and the updates workers and the local runner make."""

from datetime import datetime

import asyncpg

from server.models import Db
from server.sql import query


async def job_status(db: Db, simulation_id: int) -> tuple[str, list[asyncpg.Record]]:
    """The job state and its tasks (ordered by task_id), read in one snapshot."""
    rows = await db.fetch(query("job_status"), simulation_id)
    return rows[0]["job_state"], rows


async def lock_for_worker(
    conn: asyncpg.Connection, job_id: str, task_id: int, durable: bool = True
) -> asyncpg.Record | None:
    """Lock the simulation row like store.jobs.lock_for_worker, also reading the task's state.

    id, job_state, update_key_sha256 and task_state (None when the job has no such task).
    `durable=False` lets the transaction commit without waiting for the disk.
    """
    return await conn.fetchrow(query("lock_task_for_worker"), job_id, task_id, durable)


async def update(
    conn: asyncpg.Connection,
    simulation_id: int,
    task_id: int,
    state: str,
    *,
    simulated_primaries: int | None = None,
    requested_primaries: int | None = None,
    estimated_time: int | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> None:
    """Write a task's new state and the given fields (None: unchanged); times set on the way."""
    await conn.execute(
        query("update_task"),
        simulation_id,
        task_id,
        state,
        simulated_primaries,
        requested_primaries,
        estimated_time,
        start_time,
        end_time,
    )


async def end_unfinished(conn: asyncpg.Connection, simulation_id: int, state: str) -> list[int]:
    """Move every non-terminal task to `state` (CANCELED or FAILED); their task_ids, sorted."""
    rows = await conn.fetch(query("end_unfinished_tasks"), simulation_id, state)
    return sorted(row["task_id"] for row in rows)
