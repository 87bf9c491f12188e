"""A runner's verdicts: a task whose process ended without a final state, a simulation whose
update key is lost (its server died, SLURM forgot its jobs). Each is one transaction under the
simulation's row lock, as the workers' own writes (server/jobs/transitions.py), and its log
counts against the owner's quota under the owner's row lock, as theirs do.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from server.jobs.states import TERMINAL_STATES
from server.models import Conn
from server.store import logfiles, simulations, tasks, users

log = logging.getLogger(__name__)

# What a runner's log is cut to when it would take its owner past the quota: its verdict is
# stored in any case (it says why the task or job failed), with the ends of the output it quotes.
SHORT_LOG = 2048
CUT = "\n[... cut: the owner's storage quota is used up ...]\n"


async def _store_runner_log(conn: Conn, sim_pk: int, name: str, text: str, quota: int) -> None:
    """A runner's log of `sim_pk`, counted against its owner's quota under the owner's row
    lock, as a worker's is; when the whole would exceed `quota` (0: none), only its first and
    last SHORT_LOG / 2 characters: a 1,000-task job's output tails would take 64 MB past it."""
    user_id = await users.lock_owner(conn, sim_pk)
    await logfiles.upsert(conn, sim_pk, {name: text})
    await simulations.measure_simulation(conn, sim_pk)
    if quota and len(text) > SHORT_LOG and await simulations.stored_bytes(conn, user_id) > quota:
        half = SHORT_LOG // 2
        await logfiles.upsert(conn, sim_pk, {name: text[:half] + CUT + text[-half:]})
        await simulations.measure_simulation(conn, sim_pk)


async def fail_task(
    pool: asyncpg.Pool, job_id: str, task_id: int, log_name: str, log_text: str, quota: int = 0
) -> str | None:
    """A runner's verdict on a task whose process ended without a final state.

    The task becomes FAILED (the runner supervises its processes, so it may fail a task from
    any non-terminal state) and the log is stored (within `quota`: _store_runner_log), unless
    the task or the job is already terminal. Returns the recomputed job state, or None when
    nothing changed.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await tasks.lock(conn, job_id, task_id)
        if row is None or row.job_state in TERMINAL_STATES:
            return None
        if row.task_state is None or row.task_state in TERMINAL_STATES:
            return None
        await tasks.update(conn, row.sim_pk, task_id, "FAILED")
        await _store_runner_log(conn, row.sim_pk, log_name, log_text, quota)
        return await simulations.recompute_state(conn, row.sim_pk)


async def fail_unfinished(
    pool: asyncpg.Pool,
    job_id: str,
    log_name: str,
    explain: Callable[[list[int]], str],
    still: Callable[[Conn, int], Awaitable[bool]] | None = None,
    quota: int = 0,
) -> bool:
    """Fail a simulation whose update key is lost: nothing can report for it any more.

    Its unfinished tasks become FAILED, and so does the job (even one waiting for a merge
    step, which could not post results either). `explain(failed task ids)` is the stored log
    (within `quota`: _store_runner_log).
    False when the job had ended already, or when `still(conn, sim_pk)`, asked under the
    simulation's row lock, says the reason it was listed for no longer holds.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await simulations.lock(conn, job_id)
        if row is None or row.job_state in TERMINAL_STATES:
            return False
        if still is not None and not await still(conn, row.sim_pk):
            return False
        ended = await tasks.end_unfinished(conn, row.sim_pk, "FAILED")
        await _store_runner_log(conn, row.sim_pk, log_name, explain(ended), quota)
        if await simulations.recompute_state(conn, row.sim_pk) not in TERMINAL_STATES:
            await simulations.set_state(conn, row.sim_pk, "FAILED")
        return True


UNKNOWN_LEFT = (
    "left %d unfinished direct simulations stored before migration 0019 to external workers "
    "(not started here: no job directory; a user can cancel one): %s"
)


async def fail_interrupted(
    pool: asyncpg.Pool,
    before: datetime,
    log_name: str,
    explain: Callable[[list[int]], str],
    started: Callable[[str], bool],
) -> list[str]:
    """fail_unfinished for every unfinished simulation of the local runner submitted before
    `before`. Of those whose runner is not known (stored before migration 0019), only the ones
    it had `started`: the others may be external workers', whose keys outlive any server."""
    failed, left = [], []
    for job_id, unknown in await simulations.list_interrupted(pool, before):
        if unknown and not started(job_id):
            left.append(job_id)
        elif await fail_unfinished(pool, job_id, log_name, explain):
            failed.append(job_id)
    if left:  # a crashed local runner's queued ones among them stay so until cancelled
        log.warning(UNKNOWN_LEFT, len(left), ", ".join(left[:10]) + ("..." if left[10:] else ""))
    return failed
