"""The local runner (`[runner] kind = "local"`): one worker process per task on this host, in
a sandbox that hides the server's files and processes from it (server/runner/local/sandbox/).

At most `runner.slots` processes (tasks and merge steps) run at once (0: one per CPU); the
other tasks wait in one first-in, first-out queue across all jobs (server/runner/local/queue.py).
A worker reports only over HTTP with its update key, as on an HPC node; the runner supervises:

- a process that ends while its task is not terminal leaves the task FAILED, with the tail of
  its output stored as the log file `task_<n>_output` (retried while the database refuses it);
- cancel sends SIGTERM to the job's process groups (not to bwrap: process.terminate), SIGKILL
  after `runner.grace_period`, and drops its queued tasks; so does a cancel or delete by any
  server on the database (the change listener tells; it asks again for all after an outage,
  and each task's start checks);
- shutdown terminates every process the same way and fails what is left unfinished;
- at startup, what a server that died left unfinished (the update key lived only in its
  memory) is FAILED with a log file `runner`: simulations submitted for the local runner
  (`simulations.local_runner`), and of those stored before that was recorded, the ones with a
  job directory. One process runs the local runner (an advisory lock: lock.py); a second one
  in local mode on the same database stops with an error instead of failing the first one's.
- when a job's last task has ended and the job is MERGING_QUEUED, `merge` runs the worker
  command's merge step (`<command> merge`) once, in the job directory and that task's slot; if
  it ends with the job unfinished, the job is FAILED with its output as the log file `merge`.
"""

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from server.config import Config
from server.database import db
from server.jobs import verdicts
from server.runner import Job, RunnerBusy, cleanup
from server.runner.local import jobfiles
from server.runner.local import process as proc
from server.runner.local.lock import BUSY_TEXT, RunnerLock
from server.runner.local.queue import JobRun, TaskQueue
from server.runner.local.sandbox import lines, probe
from server.runner.local.texts import MERGE_TEXT, RUNNER_LOG, restart_text, shutdown_text
from server.store import inputs, simulations
from server.worker.outcomes import MERGE_LOG

log = logging.getLogger(__name__)

RETRY_EVERY = 5.0  # seconds between two tries of what the database refused (see _written)
TRANSIENT = (*db.UNAVAILABLE, db.DISK_FULL)  # the database away, or out of disk: for a while
T = TypeVar("T")


class LocalDispatcher:
    def __init__(self, config: Config, pool: asyncpg.Pool) -> None:
        self._config = config
        self._pool = pool
        self.base_url = config.base_url  # YAPTIDE_URL; [server] public_url overrides it
        self.slots = config.runner.slots or os.cpu_count() or 1
        self._queue = TaskQueue()
        self._jobs: dict[str, JobRun] = {}
        self._merges: dict[str, asyncio.subprocess.Process] = {}
        self._running = 0
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()
        self._lock = RunnerLock(config.database.url)
        self._sandbox: lines.Sandbox | None = None  # server/runner/local/sandbox/
        self._has_dir = functools.partial(proc.has_job_dir, config)

    async def start(self) -> None:
        """Claim this database's local runner, then fail what a previous server left unfinished
        (before any new job can be submitted); RunnerBusy when another process holds it."""
        self._sandbox = await probe.find(self._config)
        if not await self._lock.claim():
            raise RunnerBusy(BUSY_TEXT)
        try:
            failed = await verdicts.fail_interrupted(
                self._pool, datetime.now(UTC), RUNNER_LOG, restart_text, self._has_dir
            )
        except BaseException:  # not started: close() will not be called to let it go
            await self._lock.release()
            raise
        if failed:
            log.warning("ended %d simulations left unfinished by a previous server", len(failed))

    async def submit(self, job: Job) -> None:
        if self._closing:
            return  # shutting down: the next start fails it like any unfinished job
        # Without its input: a queued job's is read from the database when its first task
        # starts, so the queue does not hold every waiting submission's (up to a body each).
        run = JobRun(dataclasses.replace(job, input={}), remaining=job.ntasks)
        self._jobs[job.job_id] = run
        self._queue.add(run)
        self._pump()

    async def cancel(self, job_id: str) -> None:
        """Drop the job's queued tasks and terminate its processes (returns without waiting)."""
        if job_id in self._merges:
            self._terminate(self._merges[job_id])
        run = self._jobs.get(job_id)
        if run is None or run.canceled:
            return
        run.canceled = True
        self._queue.drop(run)
        for process in run.processes.values():
            self._terminate(process)
        await self._finish_job(run)

    def changed(self, job_id: str) -> None:
        """A simulation changed or was deleted in some server process (server/results/
        changes.py): one of this runner's that another server cancelled or deleted is
        cancelled here too (that server's dispatcher cannot)."""
        if not self._closing and (job_id in self._jobs or job_id in self._merges):
            self._spawn(self._cancel_if_ended(job_id))

    async def _cancel_if_ended(self, job_id: str) -> None:
        if await self._ended_elsewhere(job_id):
            await self.cancel(job_id)

    def recheck(self) -> None:
        """The change listener listens again: the cancels and deletes it missed meanwhile."""
        for job_id in {*self._jobs, *self._merges}:
            self.changed(job_id)

    async def _ended_elsewhere(self, job_id: str) -> bool:
        """Whether the job was cancelled or deleted (by any server process)."""
        state = await self._written(job_id, lambda: simulations.get_state(self._pool, job_id))
        return not self._closing and state in (None, "CANCELED")

    async def close(self) -> None:
        """Terminate every process, wait for them, and fail whatever is left unfinished."""
        self._closing = True
        self._queue.clear()
        unfinished = list(self._jobs)
        for run in self._jobs.values():
            for process in run.processes.values():
                self._terminate(process)
        for process in self._merges.values():
            self._terminate(process)
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for job_id in unfinished:
            await verdicts.fail_unfinished(self._pool, job_id, RUNNER_LOG, shutdown_text)
        await self._lock.release()

    async def merge(self, job: Job) -> None:
        """The merge step of a job whose tasks are all terminal and at least one COMPLETED
        (MERGING_QUEUED), once, after its last task ended (the update key is at hand here): a
        process with the job's environment (merging reads and averages every task's files,
        which must not hold up the server), reporting over HTTP like a task."""
        job_dir = proc.job_dir(self._config, job.job_id)
        env = proc.job_environment(self._config, job, self.base_url)
        argv = [*proc.worker_command(self._config), "merge"]
        output = jobfiles.merge_output_file(job_dir)
        try:
            jobfiles.make_job_dir(job_dir)
            with lines.wrapped(self._config, self._sandbox, argv, job_dir, job_dir) as launch:
                process = await proc.start(launch, env, output)
        except OSError as exc:
            await self._fail_merge(
                job.job_id, f"The merge step {argv[0]!r} could not start: {proc.reason(exc)}"
            )
            return
        log.info("job %s: merge step started (pid %d)", job.job_id, process.pid)
        self._merges[job.job_id] = process
        self._spawn(self._cancel_if_ended(job.job_id))  # cancelled or deleted as it started
        ended, tail = await proc.outcome(process, output, f"job {job.job_id}: merge step")
        del self._merges[job.job_id]
        await self._fail_merge(job.job_id, MERGE_TEXT.format(exit=ended, tail=tail))

    async def _fail_merge(self, job_id: str, text: str) -> None:
        """FAILED with `text` as the log `merge`, unless the job has ended (as it should)."""
        quota = self._config.jobs.user_quota
        fail = functools.partial(verdicts.fail_unfinished, quota=quota)
        if await self._written(job_id, lambda: fail(self._pool, job_id, MERGE_LOG, lambda _: text)):
            log.warning("job %s: marked FAILED after its merge step", job_id)

    def _pump(self) -> None:
        """Start queued tasks while slots are free."""
        while not self._closing and self._queue and self._running < self.slots:
            run, task_id = self._queue.pop()
            self._running += 1
            self._spawn(self._run_task(run, task_id))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("local runner failure", exc_info=task.exception())

    async def _run_task(self, run: JobRun, task_id: int) -> None:
        """A task in its slot; the job's last one keeps the slot for the merge step (a
        process too: at most `runner.slots` of them at once, merges ahead of queued tasks)."""
        try:
            await self._execute(run, task_id)
        finally:
            run.remaining -= 1
            try:
                await self._finish_job(run)
            finally:
                self._running -= 1
                self._pump()

    def _stopping(self, run: JobRun) -> bool:
        return run.canceled or self._closing  # its tasks must not run (any more)

    async def _execute(self, run: JobRun, task_id: int) -> None:
        job_id = run.job.job_id
        if self._stopping(run):
            return
        job_directory = proc.job_dir(self._config, job_id)
        directory = jobfiles.task_dir(job_directory, task_id)
        output = jobfiles.output_file(job_directory, task_id)
        argv = proc.worker_command(self._config)  # checked at startup (config_checks.command)
        try:  # the database away meanwhile: read again (a task left PENDING would stay so)
            if await self._ended_elsewhere(job_id):  # told or not, no task of one that ended
                await self.cancel(job_id)
                return
            env = proc.task_environment(self._config, run.job, task_id, self.base_url)
            job = await self._written(job_id, lambda: self._with_input(run.job, job_directory))
            if job is None:
                return  # deleted meanwhile (it had ended), or shutting down: nothing to run
            await asyncio.to_thread(jobfiles.write_inputs, job_directory, task_id, job)
            sandboxed = lines.wrapped(self._config, self._sandbox, argv, job_directory, directory)
            with sandboxed as launch:
                process = await proc.start(launch, env, output)
        except OSError as exc:
            await self._fail(run, task_id, proc.start_failure(argv, exc))
            return
        except Exception as exc:  # an error of ours: the task ends, and says so
            log.exception("job %s task %d: could not start", job_id, task_id)
            await self._fail(run, task_id, f"The task could not start: {type(exc).__name__}")
            return
        log.info("job %s task %d: worker started (pid %d)", job_id, task_id, process.pid)
        run.processes[task_id] = process
        if self._stopping(run):
            self._terminate(process)  # cancelled while it was being started
        ended, tail = await proc.outcome(process, output, f"job {job_id} task {task_id}: worker")
        del run.processes[task_id]
        why = "The server shut down and stopped this task: its worker"
        why = why if self._closing else "The worker"
        text = f"{why} {ended} without reporting a final task state."
        await self._fail(run, task_id, f"{text}\n\nLast output:\n{tail}")

    async def _with_input(self, job: Job, job_directory: Path) -> Job | None:
        """`job` with its input read from the database, unless its files are written already
        (then `job` as is); None when the simulation is gone."""
        if jobfiles.inputs_written(job_directory):
            return job
        found = await inputs.for_workers(self._pool, job.job_id)
        return None if found is None else dataclasses.replace(job, input=found)

    async def _fail(self, run: JobRun, task_id: int, text: str) -> None:
        """FAILED with `text` as its log, unless the task or the job has ended already."""
        job_id, name = run.job.job_id, f"task_{task_id}_output"
        fail = functools.partial(verdicts.fail_task, quota=self._config.jobs.user_quota)
        if await self._written(job_id, lambda: fail(self._pool, job_id, task_id, name, text)):
            log.warning("job %s task %d: marked FAILED", job_id, task_id)
            jobfiles.drop_results_list(proc.job_dir(self._config, job_id), task_id)

    async def _written(self, job_id: str, write: Callable[[], Awaitable[T]]) -> T | None:
        """`write()` (or a read), tried again every RETRY_EVERY seconds while the database
        cannot take it: nothing else would record that a process ended, or start a queued
        task, and the job would stay unfinished for ever. None when shutting down first (the
        next start fails what is left unfinished)."""
        while True:
            try:
                return await write()
            except TRANSIENT as exc:
                if self._closing:
                    return None
                log.warning("job %s: the database is unavailable (%s); retrying", job_id, exc)
            await asyncio.sleep(RETRY_EVERY)

    def _terminate(self, process: asyncio.subprocess.Process) -> None:
        proc.terminate(process)
        self._spawn(proc.kill_after(process, self._config.runner.grace_period))

    async def _finish_job(self, run: JobRun) -> None:
        """Forget a job once nothing of it is queued or running here; merge it if it waits, or
        remove its directory if deleted meanwhile (its processes may have outlived a delete)."""
        job_id = run.job.job_id
        if run.remaining > 0 or self._jobs.get(job_id) is not run:
            return
        del self._jobs[job_id]
        if self._closing:
            return
        state = await self._written(job_id, lambda: simulations.get_state(self._pool, job_id))
        if state is None and not self._closing:  # deleted (not stopping: _written gave up)
            await asyncio.to_thread(cleanup.remove_job_dir, self._config, job_id)
        elif state == "MERGING_QUEUED":
            await self.merge(run.job)
