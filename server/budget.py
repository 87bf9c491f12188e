"""The memory budget for buffered request bodies, shared by all requests of a server process."""

import asyncio

from aiohttp import web

from server.errors import ServiceUnavailable

# Bytes of the budget a request holds, given back by server.bodies.body_middleware.
HELD = web.RequestKey("body_bytes_held", int)


class BodyBudget:
    """Bytes of request bodies that may be held in memory at once, shared by all requests."""

    def __init__(self, size: int, wait: float) -> None:
        self.size = size
        self.free = size
        self.wait = wait
        self._changed = asyncio.Condition()

    async def take(self, request: web.Request, count: int) -> None:
        """Hold `count` more bytes for `request`; 503 when they cannot be had within `wait` s."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.free >= count), self.wait
                )
            except TimeoutError:
                raise ServiceUnavailable(
                    "Server busy: too many large request bodies at once, retry later",
                    retry_after=max(1, round(self.wait)),
                ) from None
            self.free -= count
        request[HELD] = request.get(HELD, 0) + count

    async def give_back(self, count: int) -> None:
        async with self._changed:
            self.free += count
            self._changed.notify_all()
