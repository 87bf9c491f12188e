"""Identity bodies inflated off the event loop, on one thread per server process (the inflater).

Inflating is about half of what an identity fetch of pages that are not cached costs (ISA-L,
about 1.2 ms per MB here). ISA-L and zlib let go of the GIL while they inflate, so on the inflater
thread it runs beside the event loop, which meanwhile reads pages, writes responses and serves
other requests. A body assembled in one piece (server.results.fetch.render) is inflated there in one
call. Streamed bodies (over 2 MiB) are inflated on the event loop a piece at a time: handing
each piece over cost more CPU than it saved time (README, "Results: how `GET /results` is
served").
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor

from aiohttp import web

from server.keys import INFLATER
from server.results.deflate import inflate_member

# Bodies smaller than this are inflated on the event loop: the hand-off costs more than it saves.
OFF_LOOP = 64 << 10


async def inflater_ctx(app: web.Application) -> AsyncIterator[None]:
    """The inflater thread. One: the event loop keeps the other core of a two-core host, and
    each server process (server.workers) has its own."""
    with ThreadPoolExecutor(1, thread_name_prefix="inflater") as inflater:
        app[INFLATER] = inflater
        yield


async def whole(member: bytes, inflater: Executor) -> bytes:
    """The inflated bytes of a gzip member (server.results.deflate.GzipJoiner), in one call.
    On the event loop once the inflater has stopped: a handler whose client went away is not
    waited for past the shutdown timeout, and may come here after the server's cleanup."""
    try:
        inflating = inflater.submit(inflate_member, member)
    except RuntimeError:  # "cannot schedule new futures after shutdown"
        return inflate_member(member)
    return await asyncio.wrap_future(inflating)
