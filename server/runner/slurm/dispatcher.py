"""The SLURM dispatcher: simulations as SLURM jobs, on this host (a login node) or on clusters.

`runner.kind = "slurm"` sends direct simulations to the SLURM of this host (the cluster ""
built from [slurm]); POST /jobs/batch sends a simulation to a [[clusters]] entry, over SSH when
it has a `host`. Each simulation is a job array plus a merge job (sbatch.py); their ids are
stored (table slurm_jobs) so that any server process can cancel them and the reconciler
(reconcile.py) can watch them. SLURM jobs do not depend on this process: they report over HTTP
with their update key, so a restart does not disturb them.

The upload of a simulation's files and its sbatch run in the background, in tasks this
dispatcher owns: the request that stored the simulation does not wait for a login node (each
step may take up to a minute). The simulation stays PENDING meanwhile; a failure, expected or
not, leaves it FAILED with the log `slurm`.
"""

import asyncio
import dataclasses
import logging
import posixpath
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncpg

from server.config import ClusterConfig, Config
from server.jobs import verdicts
from server.jobs.states import TERMINAL_STATES
from server.runner import Job
from server.runner.local import process as proc
from server.runner.slurm import job_dirs, sbatch
from server.runner.slurm.clusters import LOGIN_NODE, login_node_cluster, on_this_host
from server.runner.slurm.shell import LocalShell, Shell, ShellError
from server.runner.slurm.ssh import MAX_SESSIONS, SshShell
from server.store import inputs, simulations, slurm_jobs
from server.store.slurm_jobs import SlurmJobs

log = logging.getLogger(__name__)

SUBMIT_LOG = "slurm"
SUBMIT_GRACE = 5.0  # seconds close() leaves submissions in flight to finish
# Submissions to one cluster at once, as many as its SSH sessions; the others wait for their
# turn without their input in memory.
SUBMITS_AT_ONCE = MAX_SESSIONS
UNEXPECTED_TEXT = "The submission to SLURM failed unexpectedly (the server's log says why)."


class SlurmDispatcher:
    def __init__(self, config: Config, pool: asyncpg.Pool) -> None:
        self._config = config
        self._pool = pool
        self.clusters = {c.cluster_name: on_this_host(config, c) for c in config.clusters}
        self.clusters[LOGIN_NODE] = login_node_cluster(config)
        self._shells: dict[str, Shell] = {}
        self._background: set[asyncio.Task[None]] = set()  # removals and cancels
        self._submissions: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, asyncio.Task[None]] = {}  # by job_id, until their turn
        self._held: set[str] = set()  # job_ids waiting or being sent: their leases renewed
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._closing = False
        self._unsent = 0  # submissions not begun as the server stopped

    def shell(self, name: str) -> Shell:
        """The (lazily made, then reused) connection to a cluster's login node."""
        if name not in self._shells:
            cluster = self.clusters[name]
            self._shells[name] = SshShell(cluster) if cluster.host else LocalShell()
        return self._shells[name]

    async def submit(self, job: Job) -> None:
        """A direct simulation (runner.kind = "slurm"): this host's SLURM, in the background."""
        self.submit_to(job, LOGIN_NODE, (), ())

    def submit_to(
        self, job: Job, name: str, array_lines: tuple[str, ...], merge_lines: tuple[str, ...]
    ) -> None:
        """Send a stored simulation to a cluster in the background (_send). How many are in
        flight is bounded by jobs.max_unfinished per user (cancel() drops one still waiting);
        each holds about 1 KB and 40 bytes a task while it waits for its turn (its input is read
        again then), SUBMITS_AT_ONCE per cluster hold theirs."""
        if self._closing:  # left PENDING, to the reconciler's UNSUBMITTED_AFTER
            log.warning("job %s: not sent to SLURM, the server is stopping", job.job_id)
            return
        light = dataclasses.replace(job, input={})
        sending = self._send(light, name, array_lines, merge_lines)
        task = asyncio.create_task(sending, name=f"SLURM submission of {job.job_id}")
        self._submissions.add(task)
        self._waiting[job.job_id] = task
        self._held.add(job.job_id)
        task.add_done_callback(self._sent)
        task.add_done_callback(lambda _task: self._waiting.pop(job.job_id, None))
        task.add_done_callback(lambda _task: self._held.discard(job.job_id))

    async def renew_leases(self) -> None:
        """Tell the reconciler (of any process) that the submissions this process holds are
        on their way: one waits its turn behind others for as long as they take."""
        if self._held:
            await slurm_jobs.renew_leases(self._pool, sorted(self._held))

    async def _send(
        self, job: Job, name: str, array_lines: tuple[str, ...], merge_lines: tuple[str, ...]
    ) -> None:
        """One submission, in its turn. What nobody foresaw (a bug, the database gone) is logged
        and leaves the simulation FAILED rather than PENDING until the reconciler gives up."""
        try:
            async with self._turns.setdefault(name, asyncio.Semaphore(SUBMITS_AT_ONCE)):
                self._waiting.pop(job.job_id, None)  # cancel() leaves it to _submitted now
                if self._closing:  # its turn came in close()'s grace: it would be cut off
                    self._unsent += 1  # logged once by close()
                    return
                full = await self._with_input(job)
                if full is not None:  # else cancelled or deleted while it waited: not sent
                    await self._submit_now(full, name, array_lines, merge_lines)
        except Exception:
            log.exception("job %s: sending it to SLURM failed", job.job_id)
            await self._fail(job.job_id, UNEXPECTED_TEXT)

    async def _with_input(self, job: Job) -> Job | None:
        """`job` with its input read from the database; None once it has ended or is gone."""
        if await simulations.get_state(self._pool, job.job_id) in TERMINAL_STATES:
            return None
        found = await inputs.for_workers(self._pool, job.job_id)
        return None if found is None else dataclasses.replace(job, input=found)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._submissions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a SLURM submission failed and was not marked so", exc_info=task.exception())

    async def _submit_now(
        self, job: Job, name: str, array_lines: tuple[str, ...], merge_lines: tuple[str, ...]
    ) -> None:
        """Upload the job's files, sbatch both jobs, store their ids. A failure leaves the
        simulation FAILED with the log `slurm` saying why."""
        cluster = self.clusters[name]
        job_dir = posixpath.join(cluster.work_dir, job.job_id)
        files = sbatch.input_files(job)
        files[sbatch.ARRAY_SCRIPT] = sbatch.array_script(
            self._config, cluster, job, job_dir, array_lines
        ).encode()
        files[sbatch.MERGE_SCRIPT] = sbatch.merge_script(
            self._config, cluster, job, job_dir, merge_lines
        ).encode()
        try:
            await self.shell(name).write_files(job_dir, files)
            done = await self.shell(name).run(
                sbatch.submit_command(job, job_dir), stdin=job.update_key + "\n"
            )
        except ShellError as exc:
            await self._fail(job.job_id, f"The job could not be sent to SLURM: {exc}")
            self._remove_later(name, job_dir)  # see _submitted
            return
        await self._submitted(job, cluster, job_dir, done.stdout, done.stderr)

    async def _submitted(
        self, job: Job, cluster: ClusterConfig, job_dir: str, stdout: str, stderr: str
    ) -> None:
        array_id, merge_id = sbatch.parse_submitted(stdout)
        if array_id is None or merge_id is None:
            if array_id is not None:
                await self.scancel(cluster.cluster_name, array_id)
            reason = stderr.strip()
            first = reason.splitlines()[0] if reason else "(no output)"
            await self._fail(
                job.job_id, f"sbatch refused the job:\n{reason}", f"sbatch refused the job: {first}"
            )
            # The files of a job that will not run are of no use, may hold the space (a full
            # disk, a quota) later submissions need, and no slurm_jobs row would let a delete
            # find them before the hourly sweep: removed in the background.
            self._remove_later(cluster.cluster_name, job_dir)
            return
        ids = SlurmJobs(cluster.cluster_name, job_dir, array_id, merge_id)
        state = await slurm_jobs.insert(self._pool, job.job_id, ids)
        log.info("job %s: SLURM array %d, merge job %d", job.job_id, array_id, merge_id)
        if state is None or state in TERMINAL_STATES:  # cancelled while being submitted
            await self.scancel(cluster.cluster_name, array_id, merge_id)
        if state is None:  # and deleted: its directory was written after the delete's removal
            self._remove_later(cluster.cluster_name, job_dir)

    async def cancel(self, job_id: str) -> None:
        """scancel the job array and the merge job, in the background (the database says
        CANCELED already, and the cancel's transaction wrote them down in pending_scancels, which
        the reconciler retries: a stalled cluster does not hold the request). A job on a cluster no
        longer configured cannot be reached: its workers stop at their next report (409), and
        the cancel waits in pending_scancels for the cluster to come back. One of this process
        still waiting for its turn is dropped (it would hold its place in the queue until
        then: submit and cancel again and again would grow it without end)."""
        waiting = self._waiting.pop(job_id, None)
        if waiting is not None:
            waiting.cancel()
        ids = await slurm_jobs.get(self._pool, job_id)
        if ids is None:
            return
        if ids.cluster not in self.clusters:
            log.warning("job %s: cluster %r is no longer configured", job_id, ids.cluster)
            return
        self._later(self.scancel_pending(ids.cluster, (ids.array_job_id, ids.merge_job_id)))

    def remove_job_dir(self, jobs: SlurmJobs) -> None:
        """Remove a deleted simulation's job directory on its cluster, in the background (the
        sweep removes it later if this fails). This host's own is removed by the caller."""
        if jobs.cluster not in self.clusters or not self._elsewhere(jobs.cluster):
            return
        self._remove_later(jobs.cluster, jobs.job_dir)

    def _remove_later(self, name: str, job_dir: str) -> None:
        self._later(self._remove(name, job_dir))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """`work` in the background; cancelled when the server stops (the sweep and the
        reconciler do what it leaves undone)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sweep(self, pool: asyncpg.Pool, ttl: float) -> list[str]:
        """The clusters' job directories that outlived their simulation, removed (job_ids)."""
        removed: list[str] = []
        for name in filter(self._elsewhere, list(self.clusters)):
            try:
                removed += await job_dirs.sweep(
                    self.shell(name), self.clusters[name].work_dir, pool, ttl
                )
            except ShellError as exc:
                log.warning("sweeping job directories of cluster %s failed: %s", name, exc)
        return removed

    def _elsewhere(self, name: str) -> bool:
        """Whether a cluster's job directories are outside runner.work_dir (swept by cleanup)."""
        cluster = self.clusters[name]
        return bool(cluster.host) or cluster.work_dir != str(proc.work_dir(self._config))

    async def _remove(self, name: str, job_dir: str) -> None:
        try:
            await job_dirs.remove(self.shell(name), [job_dir])
        except ShellError as exc:
            log.warning("removing %s on cluster %s failed: %s", job_dir, name, exc)

    async def close(self) -> None:
        """Submissions in flight get SUBMIT_GRACE seconds to finish, then are cancelled, as are
        removals; those still waiting for their turn are not begun. A cancelled submission
        leaves its simulation PENDING without SLURM ids: the reconciler (of any server process,
        or of the next start) fails it UNSUBMITTED_AFTER seconds after its lease was last
        renewed (renew_leases), and
        then cancels any job of it that an interrupted sbatch left in SLURM (a stray, named
        after the simulation)."""
        self._closing = True
        if left := await _stop(self._submissions, SUBMIT_GRACE) + self._unsent:
            log.warning("SLURM submissions left to the reconciler as the server stops: %d", left)
        await _stop(self._background, 0.0)
        for shell in self._shells.values():
            await shell.close()

    async def scancel(self, name: str, *job_ids: int) -> None:
        """scancel jobs, remembered first (pending_scancels) and forgotten once SLURM has taken
        the cancel: one the cluster did not get (unreachable, the server stopped meanwhile) the
        reconciler retries, also after the simulation is deleted."""
        await slurm_jobs.remember_scancels(self._pool, name, job_ids)
        await self.scancel_pending(name, job_ids)

    async def scancel_pending(self, name: str, job_ids: Sequence[int]) -> None:
        """scancel jobs already written down in pending_scancels; those SLURM took are
        forgotten, the others stay for the reconciler to retry."""
        done = await self._try_scancel(name, job_ids)
        await slurm_jobs.forget_scancels(self._pool, name, done)

    async def _try_scancel(self, name: str, job_ids: Sequence[int]) -> list[int]:
        """scancel on a cluster; the jobs SLURM need not be told again (none if unreachable)."""
        try:
            done = await self.shell(name).run(sbatch.scancel_command(*job_ids), retry=True)
        except ShellError as exc:
            log.warning("scancel %s failed: %s", list(job_ids), exc)
            return []
        if done.returncode != 0:
            log.warning("scancel %s: %s", list(job_ids), done.stderr.strip())
        return sbatch.scancelled(job_ids, done.returncode, done.stderr)

    async def _fail(self, job_id: str, text: str, summary: str = "") -> None:
        """FAILED with `text` as the log `slurm`; one line of it (or `summary`) logged."""
        log.warning("job %s: %s", job_id, summary or text.splitlines()[0])
        await verdicts.fail_unfinished(self._pool, job_id, SUBMIT_LOG, lambda _tasks: text)


async def _stop(tasks: set[asyncio.Task[None]], grace: float) -> int:
    """Wait up to `grace` seconds for `tasks` to end, then cancel those still running; how many
    were cancelled."""
    running = list(tasks)
    if running and grace > 0:
        await asyncio.wait(running, timeout=grace)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return sum(task.cancelled() for task in running)
