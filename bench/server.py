"""The processes a benchmark run owns: the database, the server under test and the ceiling app.

Each runs as a separate process in its own session (so that stopping it also stops any worker
processes it forked), with its output in a log file whose tail is shown when it fails to start.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from bench import procstat

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class StartError(Exception):
    """A process did not come up; the message says why (with the tail of its log)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def database(workdir: Path) -> Iterator[tuple[str, Path | None]]:
    """(url, pgdata): DATABASE_URL when set, else an embedded PostgreSQL in `workdir`."""
    if url := os.environ.get("DATABASE_URL"):
        yield url, None
        return
    from server.database.embedded import embedded_postgres

    with embedded_postgres(workdir / "db") as url:
        yield url, workdir / "db" / "postgres"


class Process:
    """A child process started in its own session, logging to a file."""

    def __init__(self, name: str, line: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                line,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def failure(self, why: str) -> StartError:
        return StartError(
            f"{self.name}: {why}\n--- last lines of {self.log} ---\n{self.log_tail()}"
        )

    async def wait_ready(self, url: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll `url` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise self.failure(f"exited with status {self.popen.returncode} while starting")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise self.failure(f"no answer from {url} within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL of its whole session if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # leftover workers of this session only
        self.popen.wait()


def cache_off_env() -> dict[str, str]:
    """Env vars turning the server's caches off: every `[server] *_cache_size` of config.toml
    set to 0, so that each request does the full work (found by name: new caches count too)."""
    server = tomllib.loads((REPO / "config.toml").read_text()).get("server", {})
    return {f"YAPTIDE_SERVER_{key.upper()}": "0" for key in server if key.endswith("_cache_size")}


def server_env(
    database_url: str, port: int, data_dir: Path, workers: int, extra: dict[str, str]
) -> dict[str, str]:
    """The server's configuration: our database, a free port, no runner (its simulations never
    end: no limit on unfinished ones), a day-long token, plus `extra` (--server-env, --cold)."""
    return {
        **os.environ,
        **extra,
        "DATABASE_URL": database_url,
        "YAPTIDE_SERVER_HOST": "127.0.0.1",
        "YAPTIDE_SERVER_PORT": str(port),
        "YAPTIDE_SERVER_WORKERS": str(workers),
        "YAPTIDE_DATABASE_DATA_DIR": str(data_dir),
        "YAPTIDE_RUNNER_KIND": "none",
        "YAPTIDE_JOBS_MAX_UNFINISHED": "0",
        "YAPTIDE_AUTH_REGISTRATION": "open",
        "YAPTIDE_AUTH_ACCESS_TTL": "86400",
    }


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


def start_server(
    database_url: str, port: int, workdir: Path, workers: int, extra: dict[str, str]
) -> Process:
    env = server_env(database_url, port, workdir / "server-data", workers, extra)
    line = [sys.executable, "run.py"]
    return Process("server (python run.py)", line, env, workdir / "server.log")


def start_ceiling(port: int, identity: Path, gzipped: Path, workdir: Path) -> Process:
    line = [sys.executable, "-m", "bench.ceiling", str(port), str(identity), str(gzipped)]
    return Process("ceiling (bench/ceiling.py)", line, dict(os.environ), workdir / "ceiling.log")


async def wait_workers(process: Process, port: int, workers: int, timeout: float = 30.0) -> int:
    """How many processes of the server's tree listen on `port`, waiting for `workers` of them.

    Workers bind one after another, so the first answering GET / does not mean all are up.
    Fails clearly when fewer come up: the server does not implement `server.workers` yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = len(procstat.listening_pids(port, procstat.tree(process.pid)))
        if found >= workers:
            return found
        if time.monotonic() > deadline:
            raise process.failure(
                f"asked for {workers} server processes (YAPTIDE_SERVER_WORKERS={workers}) but "
                f"{found} process(es) listen on port {port} after {timeout:.0f} s: this server "
                "does not run several workers (`--workers` / server.workers not implemented yet?)"
            )
        await asyncio.sleep(0.2)
