"""The memory budget for buffered request bodies, shared by all requests of a server process.

Requests from strangers (public routes, and worker bodies whose key is only inside them) share
at most half of the budget, so that however they hold it (a small gzip body inflates to
megabytes and may then stall until `server.body_timeout`), signed-in users and workers whose
header key was checked before their body was read still find room. The first FREE_BYTES of every
body are not counted: logins, progress reports and other small bodies never wait for the budget
(aiohttp buffers that much per connection anyway).
"""

import asyncio
import re

from aiohttp import web

from server.errors import ServiceUnavailable
from server.limits.pauses import Pauses

FREE_BYTES = 64 << 10
# Bytes of the budget a request holds, given back by server.limits.bodies.with_body_budget.
HELD = web.RequestKey("body_bytes_held", int)
# Set when a worker's header key was checked before its body is read (a known sender).
KEY_CHECKED = web.RequestKey("body_key_checked", bool)
# The bytes held for parsing a request's body (hold_for_parsing), part of HELD.
PARSE_HELD = web.RequestKey("body_parse_held", int)
# Whether a request's body counts against the strangers' share (set before its first take).
STRANGER = web.RequestKey("body_from_stranger", bool)


# What parsing a JSON body may add in Python objects, at most, per byte that makes one: a list
# or dict (56-72 B and its slot), a string (~50 B besides its text; 2 quotes), any other value (a
# float: 24 B and its 8-byte slot; after a comma). Up to ~24 times the body (`[[],[],...]`);
# about 3 times for an editor project, 1 for input files.
_PARSED = {b"[": 96, b"{": 96, b'"': 32, b",": 40}
# A \u escape of a character past U+00FF (`\u001b`, a log's colour codes, keeps text narrow).
_WIDE_ESCAPE = re.compile(rb"\\u(?!00[0-9A-Fa-f]{2})")
WIDE_WINDOW = 16 << 20  # bytes looked through between two pauses (wide_text)
FREE_PARSE = 1 << 20  # parsed small bodies (logins, small submissions) never wait for the budget


def parse_cost(
    body: bytes | bytearray, start: int = 0, end: int | None = None, wide: bool | None = None
) -> int:
    """Bytes of the budget the parse of `body[start:end]` (JSON) takes: its estimated objects,
    past FREE_PARSE. Text with a character past U+00FF (raw or as a \\u escape) is held 2 or 4
    bytes a character (looked for in the whole body: no copy of the part is made; `wide`, when
    the caller looked already, wide_text)."""
    end = len(body) if end is None else end
    if wide is None:
        wide = not body.isascii() or _WIDE_ESCAPE.search(body) is not None
    objects = (end - start) * (4 if wide else 1)
    objects += sum(weight * body.count(byte, start, end) for byte, weight in _PARSED.items())
    return max(0, objects - FREE_PARSE)


async def paused_parse_cost(body: bytes | bytearray, pauses: Pauses) -> int:
    """parse_cost of the whole body, counted a window at a time with `pauses` (0.6 s for 200 MB
    at once)."""
    if len(body) <= WIDE_WINDOW:
        return parse_cost(body)
    objects = len(body) * (4 if await wide_text(body, pauses) else 1)
    for start in range(0, len(body), WIDE_WINDOW):
        end = start + WIDE_WINDOW
        objects += sum(weight * body.count(byte, start, end) for byte, weight in _PARSED.items())
        await pauses()
    return max(0, objects - FREE_PARSE)


async def wide_text(body: bytes | bytearray, pauses: Pauses) -> bool:
    """parse_cost's look for wide text in the whole body, a window at a time with `pauses` (a
    quarter of a second for 425 MB at once)."""
    if not body.isascii():
        return True
    for start in range(0, len(body), WIDE_WINDOW):
        end = start + WIDE_WINDOW  # an escape found past it is looked at again, with its digits
        found = _WIDE_ESCAPE.search(body, start, end + len(b"\\u0000"))
        if found is not None and found.start() < end:
            return True
        await pauses()
    return False


def counted(before: int, size: int) -> int:
    """The bytes of a chunk of `size` after `before` bytes of its body that count."""
    return max(0, before + size - FREE_BYTES) - max(0, before - FREE_BYTES)


class Pool:
    """Free bytes of one share, and those held by requests waiting for more."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.held_by_waiters = 0

    def all_waiting(self, held: int) -> bool:
        """Whether every byte held from this share would belong to a waiting request."""
        return self.held_by_waiters + held >= self.size - self.free


class BodyBudget:
    """Bytes of request bodies that may be held in memory at once, shared by all requests.

    Bodies are taken a chunk at a time, so requests that each hold part of the budget could all
    wait for each other. When every byte held from a share it lacks room in belongs to a waiting
    request, the request about to wait gives up at once (503) instead, and what it held goes
    back to the others.
    """

    def __init__(self, size: int, wait: float, largest: int = 0) -> None:
        self.size = size
        self.wait = wait
        self.everyone = Pool(size)
        # At least one body of the largest size, or a stranger's could never be read.
        self.strangers = Pool(max(size // 2, min(size, largest)))
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        return self.everyone.free

    def _busy(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "Server busy: too many large request bodies at once, retry later",
            retry_after=max(1, round(self.wait)),
        )

    def room(self, request: web.Request) -> int:
        """The most `request` could ever hold (its shares' sizes)."""
        return min(pool.size for pool in self._pools(request))

    def _pools(self, request: web.Request) -> tuple[Pool, ...]:
        stranger = request.get(STRANGER, True)
        return (self.everyone, self.strangers) if stranger else (self.everyone,)

    async def take(self, request: web.Request, count: int) -> None:
        """Hold `count` more bytes for `request`; 503 when they cannot be had within `wait` s.
        KeyError for a request of a route without with_body_budget: nothing would give them back."""
        held, pools = request[HELD], self._pools(request)
        if not count:
            return
        async with self._changed:
            if any(pool.free < count for pool in pools):
                await self._wait_for(count, held, pools)
            for pool in pools:
                pool.free -= count
        request[HELD] = held + count

    async def _wait_for(self, count: int, held: int, pools: tuple[Pool, ...]) -> None:
        # Only the shares without room matter: a share nobody holds (the strangers', while
        # only known senders fill the budget) would look "all waiting" with nothing held.
        if any(pool.all_waiting(held) for pool in pools if pool.free < count):
            raise self._busy()  # everyone holding bytes would be waiting: nobody would finish
        for pool in pools:
            pool.held_by_waiters += held

        def enough() -> bool:
            return all(pool.free >= count for pool in pools)

        try:
            async with asyncio.timeout(self.wait):
                await self._changed.wait_for(enough)
        except TimeoutError:
            raise self._busy() from None
        finally:
            for pool in pools:
                pool.held_by_waiters -= held

    async def trust(self, request: web.Request) -> None:
        """A stranger found to be a known sender (its body names a live update key): what it
        holds leaves the strangers' share, and what it takes from now on is the everyone's."""
        if request.get(STRANGER, True):
            async with self._changed:
                self.strangers.free += request[HELD]
                self._changed.notify_all()
            request[STRANGER] = False

    async def give_back(self, request: web.Request, count: int) -> None:
        async with self._changed:
            for pool in self._pools(request):
                pool.free += count
            self._changed.notify_all()
