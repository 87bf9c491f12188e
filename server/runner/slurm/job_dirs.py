"""Job directories on a cluster's filesystem: removed with their simulation, and swept.

A deleted simulation's directory is removed over the cluster's shell in the background (a
DELETE never waits for SSH). What that misses (the cluster unreachable, the server stopped
first) the periodic sweep of server/runner/cleanup.py removes: the cluster's `work_dir` is
listed, and the directories named by a job_id whose simulation is gone, or ended more than
`runner.job_dir_ttl` seconds ago, are removed. Nothing not named like a job_id is touched.
"""

import logging
import posixpath
import shlex

import asyncpg

from server.jobs.ids import JOB_ID
from server.runner.slurm.shell import Shell
from server.store import simulations

log = logging.getLogger(__name__)


async def remove(shell: Shell, paths: list[str]) -> None:
    """rm -rf the job directories `paths` (server-made: <work_dir>/<job_id>)."""
    paths = [path for path in paths if JOB_ID.fullmatch(posixpath.basename(path))]
    if not paths:
        return
    done = await shell.run("rm -rf -- " + " ".join(map(shlex.quote, paths)), retry=True)
    if done.returncode != 0:
        log.warning("removing job directories failed: %s", done.stderr.strip()[:500])


async def listed(shell: Shell, work_dir: str) -> list[str]:
    """The job_ids that name entries of `work_dir` (none when it does not exist yet)."""
    done = await shell.run(f"ls -1A -- {shlex.quote(work_dir)}", retry=True)
    names = done.stdout.splitlines() if done.returncode == 0 else []
    return [name for name in names if JOB_ID.fullmatch(name)]


async def sweep(shell: Shell, work_dir: str, pool: asyncpg.Pool, ttl: float) -> list[str]:
    """Remove the job directories of `work_dir` that outlived their simulation; their job_ids."""
    names = await listed(shell, work_dir)
    expired = await simulations.expired_job_ids(pool, names, ttl) if names else []
    await remove(shell, [posixpath.join(work_dir, job_id) for job_id in expired])
    return expired
