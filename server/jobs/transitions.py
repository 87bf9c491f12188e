"""Every write that creates a simulation or moves a job or a task: one transaction each, under the
simulation's row lock.

Worker updates (`POST /tasks`, `/jobs`, `/results`, `/logfiles`), the user's cancel, and the
runners' own verdicts (server/jobs/verdicts.py: a worker process that died, a server that died)
all lock the simulation row first, so the key and terminal checks, the write and the job state
recomputed from the tasks are atomic and concurrent updates of one job are serialised: none is
lost, and the stored job state is always the one its tasks justify.
"""

import logging
from typing import Any

import asyncpg
import orjson

from server.accounts.auth import INVALID_TOKEN
from server.config import JobsConfig
from server.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from server.jobs.access import NOT_FOUND, check_worker, key_digest
from server.jobs.reports import MAX_LOGFILES
from server.jobs.states import TERMINAL_STATES, check_job_move, check_task_move
from server.jobs.submission import NESTED_TOO_DEEPLY
from server.models import Conn, StoredEstimator, TaskUpdate
from server.store import inputs, logfiles, results, simulations, slurm_jobs, tasks, users

NO_LIMITS = JobsConfig(user_quota=0, max_unfinished=0)
MAX_RESULTS = 10_000  # estimators and pages of one simulation, as of one upload

log = logging.getLogger(__name__)


async def create_simulation(
    pool: asyncpg.Pool,
    *,
    job_id: str,
    user_id: int,
    title: str,
    sim_type: str,
    input_type: str,
    primaries: list[int],
    input_data: dict[str, Any],
    update_key_sha256: bytes,
    input_files: dict[str, str] | None = None,
    platform: str = "direct",
    limits: JobsConfig = NO_LIMITS,
    local_runner: bool = False,
    to_slurm: bool = False,
) -> int:
    """A simulation, its input (and the files converted from it) and one PENDING task per
    entry of `primaries`; its sim_pk. `local_runner`: the local runner runs it (and fails it at
    its next start if it is left unfinished); `to_slurm`: it is sent to SLURM (leased until
    then: sql/migrations/0020_simulations_slurm_lease.sql).

    429 (and nothing stored) when the user has `limits.max_unfinished` simulations not ended
    yet; 413 when the user's stored inputs and results would exceed `limits.user_quota`: the
    inputs counted compressed and, in addition, at their size in a job directory.
    """
    try:
        packed = await inputs.pack(input_type, input_data, input_files)  # before any lock
    except orjson.JSONEncodeError:  # read by orjson, but nested too deeply to be written back
        raise BadRequest(NESTED_TOO_DEEPLY) from None
    async with pool.acquire() as conn, conn.transaction():
        if not await users.lock_user(conn, user_id):  # deleted since its token was checked
            raise Unauthorized(INVALID_TOKEN)
        await _check_unfinished(conn, user_id, limits.max_unfinished)
        sim_pk = await simulations.insert(
            conn,
            job_id,
            user_id,
            title,
            sim_type,
            input_type,
            len(primaries),
            update_key_sha256,
            platform,
            local_runner,
            to_slurm,
        )
        await inputs.insert(conn, sim_pk, packed)
        await tasks.insert_all(conn, sim_pk, primaries)
        await _check_quota(conn, user_id, sim_pk, limits.user_quota)
    return sim_pk


async def _check_unfinished(conn: Conn, user_id: int, most: int) -> None:
    """429 when the user has `most` simulations not ended yet (0: no limit): each holds a place
    in a runner's memory until it ends. The caller holds the user's row lock."""
    if most and await simulations.count_unfinished(conn, user_id, most) >= most:
        raise TooManyRequests(
            f"Too many unfinished simulations: at most {most} at once; "
            "wait for some to end, or cancel some"
        )


async def _check_quota(conn: Conn, user_id: int, sim_pk: int, quota: int) -> None:
    """413 when what the user has stored, this transaction's writes to `sim_pk` included,
    exceeds `quota` (0: no quota). The caller holds the user's row lock (store.users.lock_owner or lock_user).
    The simulation is measured again even without a quota: one set later counts it right."""
    await simulations.measure_simulation(conn, sim_pk)
    if quota and (used := await simulations.stored_bytes(conn, user_id)) > quota:
        raise PayloadTooLarge(
            f"Storage quota exceeded: {used} bytes of inputs and results, the quota is {quota}"
        )


async def update_task(
    pool: asyncpg.Pool, job_id: str, key: str, task_id: int, update: TaskUpdate
) -> str:
    """Apply a worker's task update and recompute the job state, which is returned.

    A progress report (the bulk of the traffic) is tried first as one statement that does not
    wait for the disk (a crash may lose it; the next report repeats it) nor recompute a job
    state it cannot change. A state move, or a failed check, falls through to the transaction
    below, which answers with the right error and whose commit reaches the disk before the
    answer: a move lost after its 202 (PENDING -> RUNNING) would make the task's end refused.
    """
    if update.task_state not in TERMINAL_STATES:
        digest = key_digest(key)
        state = await tasks.report_progress(
            pool, job_id, digest, task_id, update.task_state, update
        )
        if state is not None:
            return state
    async with pool.acquire() as conn, conn.transaction():
        row = check_worker(await tasks.lock(conn, job_id, task_id), key)
        current = row.task_state
        if current is None:
            raise NotFound("Task not found")
        state = update.task_state or current
        check_task_move(task_id, current, state)
        if update.task_state is None and current in TERMINAL_STATES:
            return row.job_state  # progress sent before the task's end, arrived after it
        # Only what the report sends is written: a progress report leaves the state alone.
        await tasks.update(conn, row.sim_pk, task_id, update.task_state, **update.fields())
        if state == current:
            return row.job_state
        return await simulations.recompute_state(conn, row.sim_pk)


async def update_job(pool: asyncpg.Pool, job_id: str, key: str, state: str) -> bool:
    """A worker's `POST /jobs`; True when the job has just FAILED and its work must stop.

    A job that FAILED leaves its unfinished tasks CANCELED: nothing will finish them now.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = check_worker(await simulations.lock(conn, job_id), key)
        check_job_move(row.job_state, state)
        if state == row.job_state:
            return False
        await simulations.set_state(conn, row.sim_pk, state)
        if state != "FAILED":
            return False
        await tasks.end_unfinished(conn, row.sim_pk, "CANCELED")
        return True


async def save_results(
    pool: asyncpg.Pool,
    job_id: str,
    key: str,
    estimators: list[StoredEstimator],
    quota: int = 0,
) -> str:
    """A worker's `POST /results`: store the estimators, then the state they justify (returned);
    413 and nothing stored when the owner's quota would be exceeded, or the simulation would
    hold more than MAX_RESULTS estimators and pages (each fetch reads their index whole)."""
    async with pool.acquire() as conn, conn.transaction():
        row = check_worker(await simulations.lock(conn, job_id), key)
        user_id = await users.lock_owner(conn, row.sim_pk)
        await results.save(conn, row.sim_pk, estimators)
        if await results.count(conn, row.sim_pk) > MAX_RESULTS:
            raise PayloadTooLarge(
                f"Too many results: at most {MAX_RESULTS} estimators and pages per simulation"
            )
        await simulations.bump_results_version(conn, row.sim_pk)
        await _check_quota(conn, user_id, row.sim_pk, quota)
        return await simulations.recompute_state(conn, row.sim_pk)


async def save_logfiles(
    pool: asyncpg.Pool, job_id: str, key: str, files: dict[str, logfiles.LogText], quota: int = 0
) -> None:
    """A worker's `POST /logfiles`; 413 and nothing stored when the owner's quota would be
    exceeded (logs are stored data like results: no way around the quota), or the simulation
    would hold more than MAX_LOGFILES files (each is listed whole when the logs are read)."""
    async with pool.acquire() as conn, conn.transaction():
        row = check_worker(await simulations.lock(conn, job_id), key)
        user_id = await users.lock_owner(conn, row.sim_pk)
        await logfiles.upsert(conn, row.sim_pk, files)
        if await logfiles.count(conn, row.sim_pk) > MAX_LOGFILES:
            raise PayloadTooLarge(f"Too many log files: at most {MAX_LOGFILES} per simulation")
        await _check_quota(conn, user_id, row.sim_pk, quota)


async def cancel(pool: asyncpg.Pool, job_id: str) -> None:
    """The owner's cancel: the job and its unfinished tasks CANCELED; 409 when already terminal."""
    async with pool.acquire() as conn, conn.transaction():
        row = await simulations.lock(conn, job_id)
        if row is None:
            raise NotFound(NOT_FOUND)
        if row.job_state in TERMINAL_STATES:
            raise Conflict(f"Simulation is already {row.job_state}")
        await tasks.end_unfinished(conn, row.sim_pk, "CANCELED")
        await simulations.set_state(conn, row.sim_pk, "CANCELED")
        # Written down with the cancel: a delete right after it removes the SLURM ids.
        await slurm_jobs.remember_cancelled_scancels(conn, row.sim_pk)
