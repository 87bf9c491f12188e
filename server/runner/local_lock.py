"""One local runner per database: a PostgreSQL advisory lock, held for the runner's lifetime.

The local runner fails, at its start, every direct simulation it finds unfinished (their update
keys lived in a dead server's memory). A second server started on the same database by mistake
would fail the first one's running jobs that way, so the runner first takes this lock, and a
second one stops with RunnerBusy. The lock lives on a connection of its own (the pool's are
for requests, and carry no session state); when that session ends under it (PostgreSQL
restarted, the connection cut), the lock is taken again on a new one as soon as the database
answers.
"""

import asyncio
import contextlib
import logging

import asyncpg

from server import db
from server.models import Conn
from server.sql import query

log = logging.getLogger(__name__)

LOCK_KEY = 0x5941504C  # "YAPL": the advisory lock naming the local runner of a database
BUSY_TEXT = (
    'another server process runs the local runner on this database (runner.kind = "local"): '
    "stop it first, or give this one a database of its own"
)
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class RunnerLock:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None
        self._reclaiming: asyncio.Task[None] | None = None

    async def claim(self) -> bool:
        """Take the lock on a connection of its own; False when another process holds it."""
        conn = await db.connect(self._url)
        if not await conn.fetchval(query("try_local_runner_lock"), LOCK_KEY):
            await conn.close()
            return False
        conn.add_termination_listener(self._lost)
        self._conn = conn
        return True

    def _lost(self, conn: Conn) -> None:
        """The lock's session ended (not by release): take the lock again."""
        if conn is self._conn:
            self._conn = None
            self._reclaiming = asyncio.get_running_loop().create_task(self._reclaim())

    async def _reclaim(self) -> None:
        """Claim the lock again once the database answers (every second until it does)."""
        while True:
            try:
                if not await self.claim():
                    log.error("the local runner's lock was lost, and then taken: %s", BUSY_TEXT)
                return
            except _ERRORS:
                await asyncio.sleep(1)

    async def release(self) -> None:
        """Let another server process run the local runner: the lock goes with its session."""
        if self._reclaiming is not None:
            self._reclaiming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reclaiming
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*_ERRORS):
                await conn.close(timeout=5)
