"""The event loop the server runs on: uvloop (libuv's loop, in C) where it is installed, else
asyncio's own.

Measured with `bench/run` (README, "Latest results"): on uvloop the same server serves 5-26 %
more requests a second on every warm row (cached fetches, `POST /tasks`, the small GETs), with
aiohttp's and asyncpg's socket handling in C. uvloop has wheels for Linux and macOS; elsewhere the
server runs on asyncio's loop, unchanged.
"""

import asyncio
import contextlib
from collections.abc import Callable

new_event_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
with contextlib.suppress(ImportError):  # uvloop: not on Windows
    import uvloop

    new_event_loop = uvloop.new_event_loop
