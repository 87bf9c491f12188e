"""What SLURM says of one cluster's jobs, for a pass of the reconciler
(server/runner/slurm/reconcile.py): squeue's listing, and the final states of the jobs it has
forgotten from the cluster's jobcomp file, when one is configured. None when squeue failed
(controller or network down): nothing is decided for that cluster then."""

import contextlib
import logging

from server.runner.slurm import sbatch
from server.runner.slurm.dispatcher import SlurmDispatcher
from server.runner.slurm.shell import ShellError
from server.runner.slurm.state import Snapshot, add_jobcomp, parse_squeue
from server.store.slurm_jobs import Watched

log = logging.getLogger(__name__)


async def take(dispatcher: SlurmDispatcher, cluster: str, group: list[Watched]) -> Snapshot | None:
    """The snapshot of `cluster`, whose watched simulations are `group`."""
    shell = dispatcher.shell(cluster)
    level = logging.WARNING if group else logging.DEBUG  # a cluster with nothing watched
    try:
        done = await shell.run(sbatch.SQUEUE_COMMAND, retry=True)
    except ShellError as exc:
        log.log(level, "reconciler: squeue on %r failed: %s", cluster, exc)
        return None
    if done.returncode != 0:
        log.log(level, "reconciler: squeue on %r: %s", cluster, done.stderr.strip())
        return None
    snapshot = parse_squeue(done.stdout)
    await _add_history(dispatcher, cluster, group, snapshot)
    return snapshot


async def _add_history(
    dispatcher: SlurmDispatcher, cluster: str, group: list[Watched], snapshot: Snapshot
) -> None:
    """Final states from the jobcomp file for jobs squeue has forgotten."""
    path = dispatcher.clusters[cluster].jobcomp_file
    missing = [  # an array with one open task squeue no longer lists (its siblings may run)
        item.jobs.array_job_id
        for item in group
        if any((item.jobs.array_job_id, task) not in snapshot.tasks for task in item.open_tasks)
    ]
    missing += [
        item.jobs.merge_job_id for item in group if item.jobs.merge_job_id not in snapshot.jobs
    ]
    if not path or not missing:
        return
    command = sbatch.jobcomp_command(path, missing)
    with contextlib.suppress(ShellError):
        add_jobcomp(snapshot, (await dispatcher.shell(cluster).run(command, retry=True)).stdout)
