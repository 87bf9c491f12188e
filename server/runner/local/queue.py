"""The local runner's jobs and its one first-in, first-out queue of tasks across all jobs.

The queue holds one entry per job with tasks not started yet, whatever its ntasks, and hands
them out task by task: a user's quota allows millions of queued tasks, which must not cost the
server an entry each.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field

from server.runner import Job


@dataclass(eq=False)
class JobRun:
    """A job this runner is working on: its queued or running tasks and their processes."""

    job: Job
    remaining: int  # tasks queued or running here
    processes: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    canceled: bool = False
    next_task: int = 1  # the next task to start; those after it wait in the queue

    @property
    def queued(self) -> int:
        return self.job.ntasks - self.next_task + 1


class TaskQueue:
    def __init__(self) -> None:
        self._runs: deque[JobRun] = deque()  # jobs with tasks not started yet, oldest first

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, run: JobRun) -> None:
        self._runs.append(run)

    def pop(self) -> tuple[JobRun, int]:
        """The next task to start: the oldest job's next one."""
        run = self._runs[0]
        task_id, run.next_task = run.next_task, run.next_task + 1
        if not run.queued:
            self._runs.popleft()
        return run, task_id

    def drop(self, run: JobRun) -> None:
        """Forget the job's tasks not started yet (they no longer count in `remaining`)."""
        if run.queued:
            self._runs.remove(run)
            run.remaining -= run.queued
            run.next_task = run.job.ntasks + 1

    def clear(self) -> None:
        self._runs.clear()
