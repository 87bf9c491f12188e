"""The tasks table: creation, the status users see, and the updates workers and runners make."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.database.sql import query
from server.models import Conn, Db, TaskUpdate
from server.store import simulations


@dataclass(frozen=True, slots=True)
class LockedTask:
    """A simulation row locked for a worker write, with the state of one of its tasks."""

    sim_pk: int
    job_state: str
    update_key_sha256: bytes
    task_state: str | None  # None: the job has no such task


async def insert_all(conn: Conn, sim_pk: int, primaries: list[int]) -> None:
    """One PENDING task per entry of `primaries` (requested primaries of tasks 1..n)."""
    await conn.execute(query("insert_tasks"), sim_pk, primaries)


async def job_status(db: Db, sim_pk: int) -> tuple[str, list[asyncpg.Record]] | None:
    """The job state and its tasks (ordered by task_id), read in one snapshot; None when the
    simulation is gone (deleted since its owner was checked)."""
    rows = await db.fetch(query("job_status"), sim_pk)
    return (rows[0]["job_state"], rows) if rows else None


async def lock(conn: Conn, job_id: str, task_id: int) -> LockedTask | None:
    """Lock the simulation row like store.simulations.lock, also reading the task's state."""
    row = await conn.fetchrow(query("lock_task_for_worker"), job_id, task_id)
    if row is None:  # no such task (the simulation, if any, is then locked alone)
        job = await simulations.lock(conn, job_id)
        if job is None:
            return None
        return LockedTask(job.sim_pk, job.job_state, job.update_key_sha256, None)
    return LockedTask(row["id"], row["job_state"], row["update_key_sha256"], row["task_state"])


async def update(
    conn: Conn,
    sim_pk: int,
    task_id: int,
    state: str | None,
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
        sim_pk,
        task_id,
        state,
        simulated_primaries,
        requested_primaries,
        estimated_time,
        start_time,
        end_time,
    )


async def report_progress(
    db: Db, job_id: str, key_sha256: bytes, task_id: int, state: str | None, update: TaskUpdate
) -> str | None:
    """A worker's update that moves no state, checked and written in one statement; the job
    state, or None when a check failed (nothing was written)."""
    job_state: str | None = await db.fetchval(
        query("report_task_progress"),
        job_id,
        task_id,
        key_sha256,
        state,
        update.simulated_primaries,
        update.requested_primaries,
        update.estimated_time,
        update.start_time,
        update.end_time,
    )
    return job_state


async def end_unfinished(conn: Conn, sim_pk: int, state: str) -> list[int]:
    """Move every non-terminal task to `state` (CANCELED or FAILED); their task_ids, sorted."""
    rows = await conn.fetch(query("end_unfinished_tasks"), sim_pk, state)
    return sorted(row["task_id"] for row in rows)
