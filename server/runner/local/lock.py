"""One local runner per database: a PostgreSQL advisory lock, held for the runner's lifetime.

The local runner fails, at its start, every direct simulation it finds unfinished (their update
keys lived in a dead server's memory). A second server started on the same database by mistake
would fail the first one's running jobs that way, so the runner first takes this lock, and a
second one stops with RunnerBusy. The lock lives on a connection of its own (the pool's are
for requests: server/runner/session_lock.py); when that session ends under it (PostgreSQL
restarted, the connection cut), the lock is taken again on a new one as soon as the database
answers.
"""

import asyncio
import logging

from server.background import stopped
from server.runner.session_lock import ERRORS, SessionLock

log = logging.getLogger(__name__)

LOCK_KEY = 0x5941504C  # "YAPL": the advisory lock naming the local runner of a database
BUSY_TEXT = (
    'another server process runs the local runner on this database (runner.kind = "local"): '
    "stop it first, or give this one a database of its own"
)


class RunnerLock:
    def __init__(self, url: str) -> None:
        self._lock = SessionLock(url, LOCK_KEY, on_lost=self._lost)
        self._reclaiming: asyncio.Task[None] | None = None

    async def claim(self) -> bool:
        """Take the lock; False when another process holds it."""
        if await self._lock.claim():
            return True
        await self._lock.release()
        return False

    def _lost(self) -> None:
        """The lock's session ended (not by release): take the lock again."""
        self._reclaiming = asyncio.get_running_loop().create_task(self._reclaim())

    async def _reclaim(self) -> None:
        """Claim the lock again once the database answers (every second until it does)."""
        while True:
            try:
                if not await self.claim():
                    log.error("the local runner's lock was lost, and then taken: %s", BUSY_TEXT)
                return
            except ERRORS:
                await asyncio.sleep(1)

    async def release(self) -> None:
        """Let another server process run the local runner."""
        if self._reclaiming is not None:
            await stopped(self._reclaiming)
        await self._lock.release()
