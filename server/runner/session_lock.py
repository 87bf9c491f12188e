"""A PostgreSQL session advisory lock on a connection of its own: which one process of a
deployment does a job (the local runner of a database, the SLURM reconciler).

The pool's connections are for requests and carry no session state (server/database/db.py),
so the lock lives on a connection opened for it. The lock goes with its session: it is released by closing
that connection, and lost when the connection ends under it (PostgreSQL restarted, the
connection cut); the next `claim` then opens a new one and takes the lock again if it is free.
"""

import contextlib
from collections.abc import Callable

import asyncpg

from server.database import db
from server.database.sql import query
from server.models import Conn

ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class SessionLock:
    def __init__(self, url: str, key: int, on_lost: Callable[[], None] | None = None) -> None:
        self._url, self._key, self._on_lost = url, key, on_lost
        self._conn: asyncpg.Connection | None = None

    async def claim(self) -> bool:
        """Whether this process holds the lock now, taken if it is free. A database error is
        raised, its connection given up: the next claim opens a new one."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await db.connect(self._url)
                self._conn.add_termination_listener(self._ended)
            return bool(await self._conn.fetchval(query("claim_advisory_lock"), self._key))
        except ERRORS:
            await self.release()
            raise

    def _ended(self, conn: Conn) -> None:
        """The session ended under the lock (not by release): `on_lost` is told."""
        if conn is self._conn and self._on_lost is not None:
            self._on_lost()

    async def release(self) -> None:
        """Give the lock up, with its connection."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*ERRORS):
                await conn.close(timeout=5)
