"""The reconciler: what SLURM ended without the worker telling us becomes FAILED.

Workers report every state themselves; SLURM can end their jobs without asking them (node
failure, time limit, out of memory, an administrator's scancel). One reconciler per deployment
(the server process that holds a PostgreSQL advisory lock; another takes over within one
interval when it stops) polls each cluster's squeue every `slurm.poll_interval` seconds and
compares with the database:

- an array task SLURM has ended (or forgotten) while its task is not terminal: the task FAILED
  with SLURM's state and reason and the tail of its output as the log `task_<n>_slurm`, its
  list of result files set aside first (and put back if its own end was stored meanwhile);
- a merge job that ended while the job is not terminal (it posts results before it exits, so
  it ended without them): the job FAILED with the log `merge`;
- a job that is terminal while something of it is still queued or running in SLURM (all tasks
  failed, the merge job still waits): scancel it; then the simulation is no longer watched;
- a job named after a simulation that has ended or was deleted, whose id never reached the
  server (sbatch gave up on a controller too busy to answer, which took the job later): scancel
  it. For that, this host's squeue is asked on every poll with runner.kind = "slurm", and each
  configured cluster's once every IDLE_EVERY polls also while nothing of it is watched.

A cancel SLURM did not take (the cluster was unreachable; table pending_scancels, kept after the
simulation is deleted) is retried on every poll until scancel succeeds or SLURM forgets the job.

After `MinJobAge` squeue forgets a job; the final state then comes from the cluster's jobcomp
file when one is configured (`jobcomp_file`), else the job counts as ended with no reason known.
If squeue itself fails (controller or network down), nothing is decided for that cluster. Each
cluster's pass is a task of its own (server/runner/slurm/snapshots.py takes its squeue), begun
at a poll unless its last one still runs: a cluster that hangs delays no other.
"""

import asyncio
import logging
import shlex
from functools import partial
from itertools import groupby

import asyncpg

from server.background import stopped
from server.jobs import verdicts
from server.jobs.states import TERMINAL_STATES
from server.runner.session_lock import SessionLock
from server.runner.slurm import snapshots
from server.runner.slurm.clusters import LOGIN_NODE
from server.runner.slurm.dispatcher import SUBMIT_LOG, SlurmDispatcher
from server.runner.slurm.shell import Shell, ShellError
from server.runner.slurm.state import JobState, Snapshot
from server.store import simulations, slurm_jobs
from server.store.slurm_jobs import Watched
from server.worker.jobdir import MERGE_OUTPUT, RESULTS_MANIFEST, task_dir, task_output
from server.worker.outcomes import MERGE_LOG

log = logging.getLogger(__name__)
UNLISTED = ".unlisted"  # a task's result list, set aside while it is failed

LOCK_KEY = 0x59415054  # "YAPT": the advisory lock naming the reconciler
FORGOTTEN = JobState(  # also an array task scancelled while queued with siblings pending
    "UNKNOWN", "SLURM no longer knows this job and no jobcomp file says how it ended"
)
TASK_TEXT = (
    "SLURM ended array task {task} of job {array} as {state} before the worker reported a "
    f"final task state.\n\nLast output ({task_output('{task}')}):\n{{tail}}"
)
UNSUBMITTED_AFTER = 300.0  # seconds a lease may go unrenewed before it counts as never sent
RENEW_EVERY = UNSUBMITTED_AFTER / 5  # seconds between two renewals of a held lease, at most
IDLE_EVERY = 6  # polls between two looks for strays on a cluster with nothing watched
UNSUBMITTED_TEXT = (
    "The server stopped before SLURM confirmed this simulation's jobs (no server has held it "
    f"for {UNSUBMITTED_AFTER / 60:g} minutes), so it cannot follow them: any job of it that "
    "SLURM took anyway is cancelled. Submit it again."
)
MERGE_TEXT = (
    "The merge job {merge} ended as {state} without posting results.\n\n"
    f"Last output ({MERGE_OUTPUT}):\n{{tail}}"
)


class Reconciler:
    def __init__(
        self,
        dispatcher: SlurmDispatcher,
        pool: asyncpg.Pool,
        url: str,
        interval: float,
        direct: bool,
        quota: int = 0,  # the owners' storage quota, which the logs it stores count against
    ) -> None:
        self._dispatcher = dispatcher
        self._quota = quota
        self._pool = pool
        self._interval = interval
        self._direct = direct
        self._lock = SessionLock(url, LOCK_KEY)  # on a connection of its own
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._unconfigured: set[str] = set()  # clusters of pending cancels, logged once
        self._polls = 0
        self._passes: dict[str, asyncio.Task[None]] = {}  # each cluster's last pass

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            await stopped(self._task)
        for work in self._passes.values():
            await stopped(work)
        await self._lock.release()

    async def _loop(self) -> None:
        """Every process renews the leases of what it holds every RENEW_EVERY seconds at most;
        the one holding the lock polls every slurm.poll_interval."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while True:
            try:
                await self._dispatcher.renew_leases()
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self._interval
                    if await self._holds_lock():
                        await self._begin()
            except Exception:
                # One bad poll (database or cluster trouble) must not end the watching.
                log.exception("reconciler: poll failed")
            await asyncio.sleep(min(self._interval, RENEW_EVERY))

    async def _holds_lock(self) -> bool:
        """Whether this process runs the reconciler (its lock taken if free)."""
        held = await self._lock.claim()
        if held and not self._leading:
            log.info("reconciler: this server process watches the SLURM jobs")
        if not held:  # another process's turn now: what this one still has running stops
            for work in self._passes.values():
                work.cancel()
        self._leading = held
        return held

    async def poll(self) -> None:
        """One pass over every watched simulation, one squeue per cluster; waited for."""
        await asyncio.gather(*await self._begin())

    async def _begin(self) -> list[asyncio.Task[None]]:
        """Begin a poll: each cluster's pass is a task of its own, not begun while its last one
        runs (its login node unreachable, its controller stalled), so no cluster waits for
        another. The passes begun."""
        await self._fail_unsubmitted()
        cancels = await self._pending_scancels()
        watched = await slurm_jobs.list_watched(self._pool)  # ordered by cluster
        groups = {cluster: list(items) for cluster, items in groupby(watched, self._cluster_of)}
        for cluster in self._idle_clusters():  # looked at for strays, nothing watched there
            groups.setdefault(cluster, [])
        begun = []
        for cluster in {*groups, *cancels} & set(self._dispatcher.clusters):  # removed: none
            if cluster not in self._passes or self._passes[cluster].done():
                work = self._pass(cluster, groups.get(cluster), cancels.get(cluster, []))
                self._passes[cluster] = asyncio.ensure_future(work)
                begun.append(self._passes[cluster])
        return begun

    async def _pass(self, cluster: str, group: list[Watched] | None, cancels: list[int]) -> None:
        """One cluster's part of a poll: its cancels retried; its squeue (only when something
        is watched there, or strays are looked for), then each of `group` reconciled."""
        try:
            if cancels:
                await self._dispatcher.scancel_pending(cluster, cancels)
            if group is None:  # only cancels to retry there
                return
            snapshot = await self._snapshot(cluster, group)
            if snapshot is None:
                return
            for item in await self._still_watched(group):
                await self._reconcile(item, snapshot)
            await self._cancel_strays(cluster, group, snapshot)
        except Exception:  # one bad pass (database or cluster trouble) must not end the others
            log.exception("reconciler: poll of cluster %r failed", cluster)

    async def _still_watched(self, group: list[Watched]) -> list[Watched]:
        """`group` as the database has it after the squeue. A worker reports its task's end
        before its process exits, and SLURM ends the array task after that: a task squeue says
        ended may have COMPLETED while squeue ran, and must not be failed (nor its results list
        taken away) for having ended. Simulations watched only since wait for the next poll:
        the snapshot may predate their jobs."""
        now = {item.sim_id: item for item in await slurm_jobs.list_watched(self._pool)}
        return [now[item.sim_id] for item in group if item.sim_id in now]

    def _idle_clusters(self) -> list[str]:
        """Where to look for strays this poll even with nothing watched there: this host with
        runner.kind = "slurm" on every poll, the configured clusters one poll in IDLE_EVERY."""
        self._polls += 1
        names = [LOGIN_NODE] if self._direct else []
        if self._polls % IDLE_EVERY == 0:
            clusters = self._dispatcher.clusters.items()
            names += [name for name, c in clusters if name != LOGIN_NODE and c.available]
        return names

    @staticmethod
    def _cluster_of(item: Watched) -> str:
        return item.jobs.cluster

    async def _cancel_strays(self, cluster: str, group: list[Watched], snapshot: Snapshot) -> None:
        """Jobs named after a simulation that has ended or was deleted, whose ids the server
        never stored (sbatch failed, e.g. "Socket timed out on send/recv operation", but the
        controller took the job once it caught up): cancelled."""
        known = {job for item in group for job in (item.jobs.array_job_id, item.jobs.merge_job_id)}
        strays = {job: job_id for job, job_id in snapshot.named.items() if job not in known}
        if not strays:
            return
        ended = set(await simulations.ended_job_ids(self._pool, sorted(set(strays.values()))))
        if cancel := sorted(job for job, job_id in strays.items() if job_id in ended):
            log.warning(
                "reconciler: SLURM jobs %s on %r belong to ended simulations", cancel, cluster
            )
            await self._dispatcher.scancel(cluster, *cancel)

    async def _fail_unsubmitted(self) -> None:
        still = partial(slurm_jobs.unsubmitted, older_than=UNSUBMITTED_AFTER)  # ids stored since?
        for job_id in await slurm_jobs.list_unsubmitted(self._pool, UNSUBMITTED_AFTER):
            failed = await verdicts.fail_unfinished(
                self._pool, job_id, SUBMIT_LOG, lambda _: UNSUBMITTED_TEXT, still
            )
            if failed:
                log.warning("job %s: FAILED, SLURM never confirmed its jobs", job_id)

    async def _pending_scancels(self) -> dict[str, list[int]]:
        """The cancels SLURM has not taken yet, by configured cluster; a cluster removed from
        the configuration keeps its cancels (it may come back), logged once."""
        pending = dict(await slurm_jobs.list_pending_scancels(self._pool))
        for cluster in pending.keys() - self._dispatcher.clusters.keys() - self._unconfigured:
            self._unconfigured.add(cluster)
            log.warning(
                "reconciler: cluster %r is no longer configured: SLURM jobs %s of it cannot be "
                "cancelled",
                cluster,
                pending[cluster],
            )
        return pending

    async def _snapshot(self, cluster: str, group: list[Watched]) -> Snapshot | None:
        return await snapshots.take(self._dispatcher, cluster, group)

    async def _reconcile(self, item: Watched, snapshot: Snapshot) -> None:
        jobs = item.jobs
        if item.job_state in TERMINAL_STATES:
            await self._forget(item, snapshot)
            return
        for task in item.open_tasks:
            state = snapshot.tasks.get((jobs.array_job_id, task), FORGOTTEN)
            if state.ended or state is FORGOTTEN:
                await self._fail_task(item, task, state)
        merge = snapshot.jobs.get(jobs.merge_job_id, FORGOTTEN)
        if merge.ended or merge is FORGOTTEN:
            await self._fail_merge(item, merge)

    async def _forget(self, item: Watched, snapshot: Snapshot) -> None:
        """A terminal job: cancel what is left of it in SLURM, then stop watching it."""
        jobs = item.jobs
        array_alive = any(
            not state.ended
            for (array, _), state in snapshot.tasks.items()
            if array == jobs.array_job_id
        )
        merge = snapshot.jobs.get(jobs.merge_job_id)
        alive = [jobs.array_job_id] if array_alive else []
        alive += [jobs.merge_job_id] if merge is not None and not merge.ended else []
        if alive:  # what SLURM does not take now is retried from pending_scancels
            await self._dispatcher.scancel(jobs.cluster, *alive)
        await slurm_jobs.set_done(self._pool, item.sim_id)

    async def _fail_task(self, item: Watched, task: int, state: JobState) -> None:
        shell = self._dispatcher.shell(item.jobs.cluster)
        listed = f"{item.jobs.job_dir}/{task_dir(task)}/{RESULTS_MANIFEST}"
        if not await self._move(shell, item, listed, listed + UNLISTED):
            return  # the next poll tries again
        tail = await shell.read_tail(f"{item.jobs.job_dir}/{task_output(task)}")
        array, name = item.jobs.array_job_id, f"task_{task}_slurm"
        text = TASK_TEXT.format(task=task, array=array, state=state.describe(), tail=tail)
        if await verdicts.fail_task(self._pool, item.job_id, task, name, text, self._quota):
            log.warning("job %s task %d: FAILED (SLURM: %s)", item.job_id, task, state.describe())
        else:  # it ended meanwhile (its COMPLETED came in after all): its results stay listed
            await self._move(shell, item, listed + UNLISTED, listed)

    async def _move(self, shell: Shell, item: Watched, source: str, target: str) -> bool:
        """A task's result list set aside (the merge merges listed tasks only), or given back."""
        old, new = shlex.quote(source), shlex.quote(target)
        try:
            done = await shell.run(f"[ ! -e {old} ] || mv -f -- {old} {new}", retry=True)
        except ShellError as exc:
            log.warning("reconciler: job %s: %s", item.job_id, exc)
            return False
        return done.returncode == 0

    async def _fail_merge(self, item: Watched, state: JobState) -> None:
        shell = self._dispatcher.shell(item.jobs.cluster)
        tail = await shell.read_tail(f"{item.jobs.job_dir}/{MERGE_OUTPUT}")
        text = MERGE_TEXT.format(merge=item.jobs.merge_job_id, state=state.describe(), tail=tail)
        failed = await verdicts.fail_unfinished(
            self._pool, item.job_id, MERGE_LOG, lambda _tasks: text, quota=self._quota
        )
        if failed:
            log.warning("job %s: FAILED, its merge job ended as %s", item.job_id, state.describe())
