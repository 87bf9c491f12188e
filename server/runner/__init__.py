"""Dispatchers: who runs a submitted simulation's tasks.

The submission handler hands every new simulation (with its update key, which exists nowhere
else in clear) to the configured dispatcher, and tells it about cancellations. `none` leaves
jobs to external workers; `local` (server/runner/local/) runs the worker command per task;
`slurm` (server/runner/slurm/) sends each simulation to SLURM as a job array and a merge job.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol


class RunnerBusy(Exception):
    """Another server process already runs the local runner on this database."""


@dataclass(frozen=True)
class Job:
    job_id: str
    sim_type: str
    input_type: str
    ntasks: int
    primaries: tuple[int, ...]  # requested primaries of task 1..ntasks
    update_key: str = field(repr=False)  # a job logged or in a traceback shows no key
    input: dict[str, Any]  # the editor project JSON, or {filename: text}


class Dispatcher(Protocol):
    async def submit(self, job: Job) -> None: ...

    async def cancel(self, job_id: str) -> None: ...


class NoDispatcher:
    """kind = "none": jobs wait for external workers."""

    async def submit(self, job: Job) -> None:
        return None

    async def cancel(self, job_id: str) -> None:
        return None
