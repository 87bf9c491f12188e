"""Results heads (owner, state, results version) of running simulations, read for many
concurrent `GET /results` at once.

A fetch is answered only by a query *sent after it asked* (never by one already under way),
so it sees every upload acknowledged before it began; the fetches that ask while a query is
under way share the next one. Under load one round trip serves many requests; alone, a fetch
waits for nobody.
"""

import asyncio

from server.models import Db
from server.store import simulations
from server.store.simulations import ResultsHead

Waiting = dict[str, list[asyncio.Future[ResultsHead | None]]]


class HeadReader:
    """The fetches waiting for the next heads query, and the task that sends it."""

    def __init__(self) -> None:
        self._waiting: Waiting = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, db: Db, job_id: str) -> ResultsHead | None:
        """The head of `job_id` as the database has it now (None: no such simulation)."""
        future: asyncio.Future[ResultsHead | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(db))
        return await future

    async def _read(self, db: Db) -> None:
        """One query per round, for everything asked since the previous one was sent."""
        try:
            while self._waiting:
                asked, self._waiting = self._waiting, {}
                try:
                    heads = await simulations.get_results_heads(db, list(asked))
                except BaseException as exc:  # each fetch fails with it, as with its own query
                    _fail(asked, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for job_id, futures in asked.items():
                    for future in futures:
                        if not future.done():  # else its request was cancelled meanwhile
                            future.set_result(heads.get(job_id))
        finally:
            self._reader = None
            _fail(self._waiting, asyncio.CancelledError())  # left only when cancelled


def _fail(asked: Waiting, error: BaseException) -> None:
    for futures in asked.values():
        for future in futures:
            if future.done():
                continue
            if isinstance(error, Exception):
                future.set_exception(error)
            else:
                future.cancel()
