"""Job directories on disk (`<work_dir>/<job_id>`): removed with their simulation (by every
server process, whichever deleted it), and `runner.job_dir_ttl` seconds after the simulation
ended (0: kept until it is deleted).

A sweep runs at start and then every `_SWEEP_EVERY` seconds (or the ttl, when shorter); it also
removes directories whose simulation was deleted (while the server was down: the database keeps
deleted job_ids for 30 days), never one of a job_id this database never had (another
deployment's, sharing the work_dir), and sweeps the SLURM clusters' job directories the same
way (server/runner/slurm/job_dirs.py). Each sweep also forgets the sessions (refresh tokens)
that ended, of every user: a login prunes only its own user's.
Only directories named like a job_id (a UUID) are considered: `work_dir` may be shared with
other things, which are never the sweep's to remove.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from server.background import stopped
from server.config import Config
from server.jobs.ids import JOB_ID
from server.keys import CONFIG, POOL, SLURM
from server.runner.local.process import job_dir, work_dir
from server.runner.slurm.dispatcher import SlurmDispatcher
from server.store import refresh_tokens, simulations

log = logging.getLogger(__name__)
_SWEEP_EVERY = 3600.0


def remove_job_dir(config: Config, job_id: str) -> None:
    """Remove a simulation's job directory, if there is one (blocking: use a thread). Its
    processes may have left a tree too deep for shutil.rmtree (it recurses, and holds a
    descriptor, per level): what it leaves, `rm` removes (it walks any depth)."""
    path = job_dir(config, job_id)
    with contextlib.suppress(RecursionError):
        shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    done = subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, text=True)
    if done.returncode != 0:  # the next sweep tries again
        log.warning("job directory %s not removed: %s", path, done.stderr.strip()[:200])


def on_deletion(config: Config) -> Callable[[str], None]:
    """What every server process does when told of a deletion (server/results/caches/changes.py):
    remove the job directory in the background. It may be this process's to remove although
    another one deleted the simulation: a server of another kind on the same database."""
    removing: set[asyncio.Task[None]] = set()

    def remove(job_id: str) -> None:
        if JOB_ID.fullmatch(job_id):  # a server-made name (the payload of a notification)
            task = asyncio.create_task(asyncio.to_thread(remove_job_dir, config, job_id))
            removing.add(task)
            task.add_done_callback(removing.discard)

    return remove


async def sweep(config: Config, pool: asyncpg.Pool) -> list[str]:
    """Remove the job directories that have outlived their simulation; their job_ids."""
    root = work_dir(config)
    found = root.iterdir() if root.is_dir() else []
    names = [path.name for path in found if JOB_ID.fullmatch(path.name) and path.is_dir()]
    if not names:
        return []
    expired = await simulations.expired_job_ids(pool, names, config.runner.job_dir_ttl)
    for job_id in expired:
        await asyncio.to_thread(remove_job_dir, config, job_id)
    return expired


async def forget_ended(pool: asyncpg.Pool) -> None:
    """Forget what the database keeps only for a while: deleted job_ids (30 days) and the
    sessions that ended."""
    await simulations.forget_deleted_job_ids(pool)
    await refresh_tokens.forget_ended(pool)


async def _sweep_forever(config: Config, pool: asyncpg.Pool, slurm: SlurmDispatcher | None) -> None:
    ttl = config.runner.job_dir_ttl
    every = min(_SWEEP_EVERY, ttl) if ttl > 0 else _SWEEP_EVERY
    while True:
        try:
            await forget_ended(pool)  # first: a cluster may keep failing
            removed = await sweep(config, pool)
            removed += await slurm.sweep(pool, ttl) if slurm is not None else []
        except Exception:  # one bad sweep (disk, database, a cluster) must not end the sweeping
            log.exception("sweeping job directories failed; trying again later")
        else:
            if removed:
                log.info("removed %d expired job directories", len(removed))
        await asyncio.sleep(every)


async def sweep_ctx(app: web.Application) -> AsyncIterator[None]:
    """The periodic sweep while the app runs: job directories, and what the database keeps only
    for a while (ended sessions, deleted job_ids)."""
    task = asyncio.create_task(_sweep_forever(app[CONFIG], app[POOL], app.get(SLURM)))
    try:
        yield
    finally:
        await stopped(task)
