"""The change listener: how every server process learns that a simulation was deleted or changed
by any process, so that it stops serving that simulation's results from memory.

Each process keeps one connection (not from the pool) that LISTENs on the channels the triggers
of migration 0008 notify at commit: `simulation_deleted` and `simulation_changed` (payload: the
job_id). Notifications are asynchronous, so two more rules make "a deleted simulation is never
served from memory after its DELETE returned, in any process" hold:

- The lease. A process serves trusted (finished) entries only until LEASE seconds after it
  *sent* the last ping that its listening connection answered. PostgreSQL sends a listening
  session the notifications committed before a query ran ahead of that query's answer, and
  asyncpg hands them to us in order, so a ping that ran after a delete's commit renews the
  lease only after this process has dropped the deleted entry.
- The acknowledgement. After its DELETE commits, the deleting process waits until every
  listening session of the database (pg_stat_activity, by application_name) has answered
  "forgotten" on `simulation_deleted_ack`, which each does after dropping the entry; a session
  that does not answer within LEASE has lost its lease by then (its last ping was sent before
  the commit), so the wait is over after LEASE at most.

Each process also removes a deleted simulation's body files (server/results/caches/bodyfiles.py)
before it acknowledges (and its job directory in the background: server/runner/cleanup.py), and
on each (re)connection those of simulations deleted while it was not listening.

A process whose listening connection fails or reconnects forgets every entry (notifications may
have been missed) and serves nothing from trust until a ping succeeds again. It also empties its
page and body caches: they are keyed by ids and versions from the database's sequences, which a
database restored from a backup hands out again for other results.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import asyncpg

from server.database.sql import query
from server.models import Conn, Db
from server.results.caches.indexcache import IndexCache

log = logging.getLogger(__name__)

APP_NAME = "yaptide-changes"  # the application_name of every listening session
DELETED, CHANGED, ACKS = "simulation_deleted", "simulation_changed", "simulation_deleted_ack"
LEASE = 1.0  # seconds a ping's answer lets trusted entries be served, counted from its sending
PING_EVERY = LEASE / 4
RECONNECT_AFTER = 0.5


class Acks:
    """The backend pids of the listening sessions that acknowledged one deletion."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._arrived = asyncio.Event()

    def add(self, pid: int) -> None:
        self.pids.add(pid)
        self._arrived.set()

    async def cover(self, pids: set[int]) -> None:
        """Return once every pid of `pids` has acknowledged."""
        while not pids <= self.pids:
            await self._arrived.wait()
            self._arrived.clear()


class Changes:
    """The listening connection of this process, kept open (reconnected) by `run`."""

    def __init__(
        self,
        url: str,
        cache: IndexCache,
        forget: Callable[[str], None],
        reset: Callable[[], None] = lambda: None,
        kept: Callable[[], list[str]] = list,
    ) -> None:
        self.url = url
        self.cache = cache
        self.forget = forget  # removes what else this process keeps of a deleted simulation
        self.reset = reset  # empties what else this process keeps by the database's ids
        self.kept = kept  # the job_ids this process keeps files of (blocking)
        self.watchers: list[Callable[[str], None]] = []  # told each changed or deleted job_id
        self.resumed: list[Callable[[], None]] = []  # told when listening (again): check all
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._waiting: dict[str, list[Acks]] = {}
        self._acking: set[asyncio.Task[None]] = set()
        self._lost = False  # since the last failure, not listening again yet

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after any failure."""
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any failure: this loop must not end
                # Not only connection errors: asyncpg may answer a query on a connection the
                # server terminated with InternalClientError ("another operation is in progress").
                # Said once an outage, not at every attempt to reconnect.
                log.log(
                    logging.DEBUG if self._lost else logging.WARNING,
                    "change listener lost (%s: %s); results are checked in the database",
                    type(exc).__name__,
                    exc,
                )
                self._lost = True
            self._distrust()
            await asyncio.sleep(RECONNECT_AFTER)

    async def _listen(self) -> None:
        settings = {"application_name": APP_NAME}
        conn = await asyncpg.connect(self.url, server_settings=settings, timeout=10)
        try:
            conn.add_termination_listener(lambda _: self._distrust())
            await conn.add_listener(DELETED, self._on_deleted)
            await conn.add_listener(CHANGED, self._on_changed)
            await conn.add_listener(ACKS, self._on_ack)
            self._distrust()  # whatever was read before LISTEN may have missed a change
            await self._forget_gone(conn)
            self._conn = conn
            for resume in self.resumed:  # what changed while nobody listened was not told
                resume()
            if self._lost:
                log.info("change listener listening again")
                self._lost = False
            while True:
                sent = time.monotonic()
                # (asyncio.timeout, not wait_for: in Python 3.11 wait_for may swallow the
                # cancellation that stops this loop when the ping completes at the same time;
                # it also bounds the wait for the lock, which an acknowledgement caught by a cut
                # connection would hold until the operating system gives up on it)
                async with asyncio.timeout(LEASE), self._lock:
                    await conn.fetchval(query("changes_ping"))
                self.cache.renew(sent + LEASE)
                await asyncio.sleep(PING_EVERY)
        finally:
            self._conn = None
            conn.terminate()

    async def _forget_gone(self, conn: Conn) -> None:
        """Forget the simulations deleted while this process was not listening: nothing else
        would remove their files. After LISTEN, so a deletion committed later is notified."""
        kept = await asyncio.to_thread(self.kept)
        if kept:
            async with self._lock:
                gone = await conn.fetch(query("changes_gone"), kept)
            for row in gone:
                self.forget(row["job_id"])

    def _distrust(self) -> None:
        """Notifications may have been missed, or the database replaced (restored)."""
        self.cache.distrust()
        self.reset()

    def _on_changed(self, conn: Conn, pid: int, channel: str, payload: object) -> None:
        self.cache.changed(str(payload))
        for watcher in self.watchers:
            watcher(str(payload))

    def _on_deleted(self, conn: Conn, pid: int, channel: str, payload: object) -> None:
        job_id = str(payload)
        self.cache.changed(job_id)
        self.forget(job_id)
        for watcher in self.watchers:
            watcher(job_id)
        task = asyncio.get_running_loop().create_task(self._ack(conn, job_id))
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    async def _ack(self, conn: Conn, job_id: str) -> None:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            async with self._lock:
                await conn.execute(query("changes_ack"), f"{conn.get_server_pid()} {job_id}")

    def _on_ack(self, conn: Conn, pid: int, channel: str, payload: object) -> None:
        backend, _, job_id = str(payload).partition(" ")
        for acks in self._waiting.get(job_id, ()):
            acks.add(int(backend))

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[Acks]:
        """Collect acknowledgements of the deletion of `job_id` (enter before deleting)."""
        acks = Acks()
        self._waiting.setdefault(job_id, []).append(acks)
        try:
            yield acks
        finally:
            self._waiting[job_id].remove(acks)
            if not self._waiting[job_id]:
                del self._waiting[job_id]

    async def deleted(self, db: Db, job_id: str, acks: Acks) -> None:
        """Return once no server process serves the deleted `job_id` from memory any more:
        every listening session acknowledged, or LEASE passed (the delete is committed either
        way: a failure here only makes it wait the whole lease)."""
        self.cache.changed(job_id)
        self.forget(job_id)
        deadline = time.monotonic() + LEASE
        with contextlib.suppress(TimeoutError, OSError, asyncpg.PostgresError):
            if self._conn is None:  # no acknowledgement can be heard: wait out the leases
                raise TimeoutError
            async with asyncio.timeout(LEASE):
                rows = await db.fetch(query("changes_listeners"), APP_NAME)
                await acks.cover({row["pid"] for row in rows})
                return
        log.warning("no acknowledgement from every server process of deleting %s", job_id)
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
