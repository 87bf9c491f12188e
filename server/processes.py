"""Several server processes on one port (SO_REUSEPORT), sharing the database.

The parent starts the database (when embedded), settles the signing secret so that every
process signs with the same one, forks the servers and waits until each reports that it listens;
SIGTERM or Ctrl-C is passed on to them, and the database stops only after all of them have ended.
A process that cannot start (port in use, database down) reports its one-line error instead,
and run.py ends with it; one that ends while serving (killed, crashed) ends run.py too, with one
line and status 1, as the death of a single server process would: a supervisor restarts it.
Also the checks `serve` makes before it starts anything, and the one line an expected error
ends run.py with.
"""

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.queues import Queue
from typing import Any

from aiohttp import web

from server.accounts.auth import load_secret
from server.config import Config, ConfigError
from server.config_loader import where_set

STOP_TIMEOUT = 30.0
FAILED_START_GRACE = 2.0


def check_process_count(config: Config, count: int) -> None:
    """More than one server process needs a dispatcher that does not live in one of them."""
    if count > 1 and config.runner.kind == "local":
        raise ConfigError(
            'server.workers: more than one server process needs runner.kind = "slurm" or "none" '
            "(the local runner keeps each job's update key and processes in one server process)"
        )


def check_host(config: Config) -> None:
    """ConfigError naming server.host when it has no address to listen on (resolved as asyncio
    will bind it): the bind's own error does not say which setting is wrong."""
    host = config.server.host
    try:
        socket.getaddrinfo(
            host or None, config.server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(
            f"server.host: no address to listen on ({exc.strerror}) (got {host!r})"
        ) from None
    except UnicodeError:  # not a name the resolver can take: `a..b`, a 64-character label
        raise ConfigError(f"server.host: not a valid host name (got {host!r})") from None


@contextlib.contextmanager
def port_held(config: Config) -> Iterator[None]:
    """Hold the port for the server processes of this run.py: OSError when it is in use. They
    bind with SO_REUSEPORT, which would let them join the listeners of another run.py (a server
    not stopped before its upgrade); these sockets bind without it, so they fail on any listener,
    and take SO_REUSEPORT after binding: our processes can bind beside them, nobody else can."""
    held: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in socket.getaddrinfo(
            config.server.host or None,
            config.server.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        ):
            sock = socket.socket(family, kind, protocol)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds
            try:
                sock.bind(address)
            except OSError as exc:  # worded as asyncio's, which one server process meets
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {reason}"
                ) from None
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        yield
    finally:
        for sock in held:
            sock.close()


def one_line(exc: BaseException) -> str:
    """The line run.py ends with for an expected error."""
    if isinstance(exc, ConfigError):
        return f"Configuration error: {where_set(str(exc), os.environ)}"
    # Some errors have no text (TimeoutError); PostgreSQL's may add lines (HINT, DETAIL).
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"Error: {text or type(exc).__name__}"


def run_server(
    config: Config, loop: asyncio.AbstractEventLoop, listening: Callable[[], None], **options: Any
) -> None:
    """The API of `config` served in this process until a signal ends it; `listening()` once
    the port is bound. `options`: more of aiohttp's `run_app` (reuse_port, handle_signals)."""
    from server.app import create_app
    from server.limits.serving import handler_settings, served

    keep_descriptors()
    web.run_app(
        served(create_app(config)),
        host=config.server.host,
        port=config.server.port,
        print=lambda _: listening(),
        access_log=None,
        loop=loop,
        **handler_settings(config),
        **options,
    )


def keep_descriptors() -> None:
    """Every descriptor of this process but stdin, stdout and stderr closed on exec: under
    uvloop, a process the server starts (a worker, a simulator, sbatch) gets every one that is
    not (it has no close_fds), such as one that run.py's own parent left open to it."""
    with contextlib.suppress(FileNotFoundError):  # no /proc: not Linux
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd > 2:
                with contextlib.suppress(OSError):  # the listing's own, closed by now
                    os.set_inheritable(fd, False)


def _serve_one(
    config: Config, reports: "Queue[str]", expected: tuple[type[BaseException], ...]
) -> None:
    """One server process: reports "" once it listens, or its error line if it cannot start."""
    from server.eventloop import new_event_loop

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the loop's handlers are installed
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    loop = new_event_loop()
    _stop_on_the_first_signal(loop)
    threading.Thread(target=_end_with_parent, daemon=True).start()
    try:
        run_server(config, loop, lambda: reports.put(""), reuse_port=True, handle_signals=False)
    except expected as exc:
        reports.put(one_line(exc))
        raise SystemExit(1) from None


def _stop_on_the_first_signal(loop: asyncio.AbstractEventLoop) -> None:
    """SIGINT or SIGTERM begins the graceful stop (requests under way get their
    SHUTDOWN_TIMEOUT); the signals after it are ignored. Ctrl-C reaches every process of the
    group, then run.py passes a SIGTERM on: aiohttp's own handler took that as a second stop
    in the middle of the first, which cancelled the requests it was letting finish."""

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)
        raise web.GracefulExit

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def _end_with_parent() -> None:
    """Stop this server process (SIGTERM, as the parent would) once the parent has ended, also
    by `kill -9`: it must not keep the port and the database after run.py is gone."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
    os.kill(os.getpid(), signal.SIGTERM)


def _wait_listening(
    processes: Sequence[multiprocessing.process.BaseProcess], reports: "Queue[str]"
) -> None:
    """Until every process listens; SystemExit with the first error a process reports, or when
    one ends without a report."""
    listening = 0
    while listening < len(processes):
        try:
            report = reports.get(timeout=0.1)
        except queue.Empty:
            if all(process.is_alive() for process in processes):
                continue
            try:
                report = reports.get(timeout=1.0)  # what it sent before it ended
            except queue.Empty:
                raise SystemExit("Error: a server process ended while starting") from None
        if report:
            raise SystemExit(report)
        listening += 1


def serve_processes(
    config: Config, count: int, listening: str, expected: tuple[type[BaseException], ...]
) -> None:
    """Run `count` server processes until a signal (SIGINT, or SIGTERM raised as a
    KeyboardInterrupt: the normal end, as for web.run_app); ends them all before returning. An
    error of the `expected` kinds in a process that starts is its one line (SystemExit)."""
    # Ctrl-C stops them even if this process was started with SIGINT ignored (a background job
    # of a non-interactive shell), as it stops one server process (aiohttp handles SIGINT itself).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = config.replace("auth", secret=load_secret(config))
    context = multiprocessing.get_context("fork")
    reports: Queue[str] = context.Queue()
    processes = [
        context.Process(target=_serve_one, args=(config, reports, expected)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    try:
        try:
            _wait_listening(processes, reports)
        except SystemExit:
            _let_end(processes, FAILED_START_GRACE)  # those failing too end on their own
            raise
        print(f"{listening} ({count} processes)", flush=True)
        ended = _first_to_end(processes)
        if ended.exitcode != 0:  # 0: it stopped cleanly, on Ctrl-C to the whole process group
            raise SystemExit(
                f"Error: server process {ended.pid} ended ({_how(ended.exitcode)}); "
                "the others were stopped"
            )
    except KeyboardInterrupt:
        pass
    finally:
        _stop_surely(processes)


def _first_to_end(
    processes: Sequence[multiprocessing.process.BaseProcess],
) -> multiprocessing.process.BaseProcess:
    """The first server process to end: none ends unless it failed or was killed, as a signal
    to run.py (the normal end) interrupts this wait first."""
    ready = multiprocessing.connection.wait([process.sentinel for process in processes])
    ended = next(process for process in processes if process.sentinel in ready)
    ended.join()  # (its sentinel may be ready a moment before it can be reaped)
    return ended


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        names = {sig.value: sig.name for sig in signal.Signals}
        return f"killed by {names.get(-exitcode, f'signal {-exitcode}')}"
    return f"exit status {exitcode}"


def _let_end(processes: Sequence[multiprocessing.process.BaseProcess], seconds: float) -> None:
    """Wait up to `seconds` in all for processes to end by themselves (a signal while one
    closes its event loop would print a stray traceback)."""
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM to the processes still running, then wait for each (STOP_TIMEOUT, then kill).
    Ctrl-C or SIGTERM reaching run.py in that wait (one process ended first, on its own Ctrl-C)
    asks for the stop under way: ignored, where its KeyboardInterrupt ended run.py before the
    others, and an embedded database under the requests they were letting finish."""
    with _ignored(signal.SIGINT, signal.SIGTERM):
        for process in processes:
            # (not os.kill: a process reaped by a wait that Ctrl-C interrupted before it kept
            # the exit status looks alive, and os.kill then failed with ESRCH, before run.py
            # had stopped the others, which it then waited for for ever at its exit)
            process.terminate()
        for process in processes:
            process.join(STOP_TIMEOUT)
            if process.is_alive():
                process.kill()


def _stop_surely(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """_stop, begun again when Ctrl-C or SIGTERM came before it could ignore them (run.py
    has just reaped a process that ended on its own Ctrl-C, say): their KeyboardInterrupt cut
    it short, and run.py ended without stopping the other processes, then waited for them for
    ever at its exit."""
    while True:
        try:
            return _stop(processes)
        except KeyboardInterrupt:
            continue


@contextlib.contextmanager
def _ignored(*signals: signal.Signals) -> Iterator[None]:
    """`signals` ignored in the block: not held back and delivered after it, as around the
    embedded database's start and stop (database.embedded), since the block does what they ask."""
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
