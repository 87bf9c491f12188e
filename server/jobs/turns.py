"""One job's worker writes take turns in each server process before they take a database
connection.

A worker write locks its simulation's row (server/jobs/transitions.py); while one holds it (a
large `POST /results` or `/logfiles`: seconds), the job's other writes wait for it. They waited
holding a connection of the pool each, so a job of many tasks reporting progress, or anyone
posting with its job_id (the key is checked under the lock), took the whole pool and every
other user's requests waited: 5 s behind a 240 MB log upload with 30 tasks reporting. Now
they wait here, without a connection, PER_JOB at a time (one holding the lock, one next).
A turn costs ~3 µs when there is no wait.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

PER_JOB = 2


class JobTurns:
    def __init__(self, per_job: int = PER_JOB) -> None:
        self._per_job = per_job
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._wanting: dict[str, int] = {}  # writes holding or awaiting a turn, per job

    @contextlib.asynccontextmanager
    async def turn(self, job_id: str) -> AsyncIterator[None]:
        """Hold one of the job's turns; a job's gate exists only while writes want it."""
        gate = self._gates.get(job_id)
        if gate is None:
            gate = self._gates[job_id] = asyncio.Semaphore(self._per_job)
        self._wanting[job_id] = self._wanting.get(job_id, 0) + 1
        try:
            async with gate:
                yield
        finally:
            self._wanting[job_id] -= 1
            if not self._wanting[job_id]:
                del self._wanting[job_id], self._gates[job_id]
