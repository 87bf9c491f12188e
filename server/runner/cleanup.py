"""Job directories on disk (`<work_dir>/<job_id>`): removed with their simulation, and
`runner.job_dir_ttl` seconds after the simulation ended (0: kept until it is deleted).

A sweep runs at start and then every `_SWEEP_EVERY` seconds (or the ttl, when shorter); it also
removes directories whose simulation no longer exists (deleted while the server was down).
Only directories named like a job_id (a UUID) are considered: `work_dir` may be shared with
other things, which are never the sweep's to remove.
"""

import asyncio
import contextlib
import logging
import re
import shutil
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from server.config import Config
from server.keys import CONFIG, POOL
from server.runner.process import job_dir, work_dir
from server.store import simulations

log = logging.getLogger(__name__)
_SWEEP_EVERY = 3600.0
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def remove_job_dir(config: Config, job_id: str) -> None:
    """Remove a simulation's job directory, if there is one (blocking: use a thread)."""
    shutil.rmtree(job_dir(config, job_id), ignore_errors=True)


async def sweep(config: Config, pool: asyncpg.Pool) -> list[str]:
    """Remove the job directories that have outlived their simulation; their job_ids."""
    root = work_dir(config)
    found = root.iterdir() if root.is_dir() else []
    names = [path.name for path in found if _JOB_ID.fullmatch(path.name) and path.is_dir()]
    if not names:
        return []
    expired = await simulations.expired_job_ids(pool, names, config.runner.job_dir_ttl)
    for job_id in expired:
        await asyncio.to_thread(remove_job_dir, config, job_id)
    return expired


async def _sweep_forever(config: Config, pool: asyncpg.Pool) -> None:
    every = min(_SWEEP_EVERY, config.runner.job_dir_ttl)
    while True:
        try:
            removed = await sweep(config, pool)
        except (OSError, asyncpg.PostgresError):
            log.exception("sweeping job directories failed; trying again later")
        else:
            if removed:
                log.info("removed %d expired job directories", len(removed))
        await asyncio.sleep(every)


async def job_dirs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The periodic sweep, while the app runs (none when job_dir_ttl is 0)."""
    config = app[CONFIG]
    if config.runner.job_dir_ttl <= 0:
        yield
        return
    task = asyncio.create_task(_sweep_forever(config, app[POOL]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
