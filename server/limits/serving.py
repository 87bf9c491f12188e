"""How the HTTP server itself is set up: the settings aiohttp applies below the application,
and the kernel's and ours for a connection that must not hold a large response for ever
(drop_when_stalled; Stall, for a body written a piece at a time).

The same settings serve `python run.py` (one process or several) and the tests' servers, so
what the tests check is what runs.
"""

import asyncio
import gc
import logging
import socket
import weakref
from collections.abc import Awaitable
from typing import Any

from aiohttp import http_writer, web

from server.config import Config
from server.keys import CONFIG

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0
_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux
_MAX_MS = 2**31 - 1  # what the option holds: about 24 days
# Connections whose socket has the option already: set once per connection, not per request
# (~2 µs, 1-2 % of a cached fetch; the check costs ~0.15 µs).
_SET: "weakref.WeakSet[asyncio.BaseTransport]" = weakref.WeakSet()
_ONE_WRITE = False  # set at startup (one_write_per_response)


def handler_settings(config: Config) -> dict[str, Any]:
    """Keyword arguments for aiohttp's connection handler (web.run_app, AppRunner, TestServer)."""
    return {
        # An idle connection, or one whose request line and headers are not complete, is closed
        # this long after it opened or after its last response.
        "keepalive_timeout": config.server.keepalive_timeout,
        # Encoded request bodies are inflated by server.limits.bodies, with bounds and JSON errors.
        "auto_decompress": False,
        # On SIGTERM, requests under way get this long to finish, then are cancelled (rolled
        # back): aiohttp's 60 s let one client sending a body slowly hold the stop past the
        # usual supervisors' patience (docker 10 s, Kubernetes 30 s), which then kill -9.
        "shutdown_timeout": SHUTDOWN_TIMEOUT,
    }


def served(app: web.Application) -> web.Application:
    """`app` as a server process runs it (`python run.py`, one process or several; the tests'
    in-process apps are not): once started, what it holds is out of the collector's sight."""
    app.on_startup.append(_freeze_what_started)
    return app


async def _freeze_what_started(app: web.Application) -> None:
    """The last on_startup hook: the objects a started process holds (its modules, the app and
    its routes, its pools: some 80,000) are moved out of the cyclic garbage collector's sight
    after one last collection (gc.freeze), so that a full collection under load walks only
    what was made since: under 0.4 ms instead of 30-60 ms in which the event loop serves nothing
    (one every ~25 s of cold fetches; bench/HISTORY.md, 2026-12-03 10:22). Only garbage cycles
    through those objects would never be freed; reference counting frees them as before."""
    gc.collect()
    gc.freeze()


async def one_write_per_response(app: web.Application) -> None:
    """An on_startup hook: under uvloop, aiohttp hands a response's headers and body to the
    transport in one `writelines` (uvloop's is a writev), neither sent apart (a send, and on
    loopback a packet, of their own) nor joined into one new buffer (a copy of the whole body).
    aiohttp itself uses writelines only from Python 3.12.9, whose asyncio transports bound it by
    the write buffer's high-water mark (CPython gh-127655); uvloop's keeps that bound. With
    server/results/caches/repeats.py: 9 % more cached fetches of finished results a second
    (bench/HISTORY.md, 2026-12-02 16:20)."""
    global _ONE_WRITE
    uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    if uvloop and hasattr(http_writer, "SKIP_WRITELINES"):
        http_writer.SKIP_WRITELINES = False
    _ONE_WRITE = not getattr(http_writer, "SKIP_WRITELINES", True)


def one_write() -> bool:
    """Whether aiohttp writes a response's headers and body with one writelines (else it joins
    them: writing.send_body then writes a large body apart from its headers)."""
    return _ONE_WRITE


def drop_when_stalled(request: web.Request) -> None:
    """Before a large response: the kernel drops the connection once what it sends stays
    unacknowledged for `server.body_timeout` seconds (TCP_USER_TIMEOUT, which also covers a
    client that keeps its receive window shut). A response is handed to the transport whole,
    and a client that never reads it would otherwise hold its megabytes for ever."""
    transport = request.transport
    if transport is None or transport in _SET:
        return
    _SET.add(transport)
    sock = transport.get_extra_info("socket")
    if _USER_TIMEOUT is None or sock is None or sock.type != socket.SOCK_STREAM:
        return
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        timeout_ms = min(int(request.app[CONFIG].server.body_timeout * 1000), _MAX_MS)
        sock.setsockopt(socket.IPPROTO_TCP, _USER_TIMEOUT, max(timeout_ms, 1))


def cut_short(request: web.Request, response: web.StreamResponse, why: str) -> web.StreamResponse:
    log.warning("GET %s: %s; connection closed", request.path, why)
    if request.transport is not None:
        request.transport.close()
    return response


class Stall:
    """Cuts off a client that takes no piece of a body for `server.body_timeout` seconds: a
    write waits for its client to take it (aiohttp drains the transport), and one waiting that
    long drops the connection (not closed: a close waits for the buffer to be sent) and raises
    ConnectionResetError. One timer per body, moved on when it fires during no write or a
    recent one, rather than an asyncio.timeout per write (a tenth of the server's time on a
    2.6 MB body file's fetch, py-spy)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.timeout = request.app[CONFIG].server.body_timeout
        self.loop = asyncio.get_running_loop()
        self.since: float | None = None  # when the write under way began
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(self.timeout, self._check)

    def __enter__(self) -> "Stall":
        return self

    def __exit__(self, *_: object) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def write(self, sending: Awaitable[None]) -> None:
        self.since = self.loop.time()
        await sending
        self.since = None
        if self.timer is None:  # cut off while it waited (the dropped connection ended it)
            raise ConnectionResetError(self.message)

    @property
    def message(self) -> str:
        return f"GET {self.request.path}: the client took nothing for {self.timeout} s"

    def _check(self) -> None:
        now = self.loop.time()
        if self.since is None or now - self.since < self.timeout:
            begun = now if self.since is None else self.since
            self.timer = self.loop.call_at(begun + self.timeout, self._check)
            return
        self.timer = None
        if self.request.transport is not None:
            self.request.transport.abort()
        log.warning("%s; connection dropped", self.message)
