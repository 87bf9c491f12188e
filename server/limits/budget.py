"""The memory budget for buffered request bodies, shared by all requests of a server process."""

import asyncio

from aiohttp import web

from server.errors import ServiceUnavailable

# Bytes of the budget a request holds, given back by server.limits.bodies.with_body_budget.
HELD = web.RequestKey("body_bytes_held", int)


class BodyBudget:
    """Bytes of request bodies that may be held in memory at once, shared by all requests.

    Bodies are taken a chunk at a time, so requests that each hold part of the budget could all
    wait for each other. When every byte held belongs to a waiting request, the request about to
    wait gives up at once (503) instead, and what it held goes back to the others.
    """

    def __init__(self, size: int, wait: float) -> None:
        self.size = size
        self.free = size
        self.wait = wait
        self._held_by_waiters = 0
        self._changed = asyncio.Condition()

    def _busy(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "Server busy: too many large request bodies at once, retry later",
            retry_after=max(1, round(self.wait)),
        )

    async def take(self, request: web.Request, count: int) -> None:
        """Hold `count` more bytes for `request`; 503 when they cannot be had within `wait` s.
        KeyError for a request of a route without with_body_budget: nothing would give them back."""
        held = request[HELD]
        async with self._changed:
            if self.free < count:
                await self._wait_for(count, held)
            self.free -= count
        request[HELD] = held + count

    async def _wait_for(self, count: int, held: int) -> None:
        if self._held_by_waiters + held >= self.size - self.free:
            raise self._busy()  # everyone holding bytes would be waiting: nobody would finish
        self._held_by_waiters += held
        try:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.free >= count), self.wait)
        except TimeoutError:
            raise self._busy() from None
        finally:
            self._held_by_waiters -= held

    async def give_back(self, count: int) -> None:
        async with self._changed:
            self.free += count
            self._changed.notify_all()
