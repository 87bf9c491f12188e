"""The embedded PostgreSQL is not handed the server's secrets (it inherits the environment), and
is given glibc malloc thresholds that keep its backends from faulting in freed memory again."""

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import psutil

from tests.test_cli import Server, postgres_processes, server_dir  # noqa: F401

SIGNING_SECRET = "review-signing-secret-that-must-stay-with-the-server"
PG_PASSWORD = "review-pgpassword-not-for-postgres"
OPERATORS_MMAP_THRESHOLD = "4194304"


async def superuser_reads(pgdata: Path, path: str) -> bytes:
    """What a superuser session of the embedded database reads at `path` (as postgres's account)."""
    conn = await asyncpg.connect(f"postgresql://postgres@/postgres?host={pgdata}")
    try:
        return bytes(await conn.fetchval("SELECT pg_read_binary_file($1)", path))
    finally:
        await conn.close()


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the postmaster of `pgdata` once it accepts connections (its postmaster.pid
    says "ready": the pid is written first, the socket made later)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().split("\n")
        return int(lines[0]) if len(lines) > 7 and lines[7].strip() == "ready" else None
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "postgres"
    except psutil.Error:
        return False


def check_environment(pgdata: Path, pid: int) -> None:
    """Neither the postmaster's environment nor what SQL reads of it holds a secret."""
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    through_sql = asyncio.run(superuser_reads(pgdata, f"/proc/{pid}/environ"))
    assert b"PATH=" in environ and b"PATH=" in through_sql  # the environment was read
    found = {
        name
        for name, value in (("secret", SIGNING_SECRET), ("PGPASSWORD", PG_PASSWORD))
        if value.encode() in environ or value.encode() in through_sql
    }
    assert found == set(), f"postgres (pid {pid}) holds the server's {sorted(found)}"
    malloc = {
        name: value
        for name, _, value in (line.partition("=") for line in environ.decode().split("\0"))
        if name.startswith("MALLOC_")
    }
    # the mmap threshold is the operator's, the trim threshold ours (server/database/embedded.py)
    trim = str(16 << 20)
    assert malloc == {
        "MALLOC_MMAP_THRESHOLD_": OPERATORS_MMAP_THRESHOLD,
        "MALLOC_TRIM_THRESHOLD_": trim,
    }


def test_the_embedded_postgres_is_given_no_secret_and_malloc_thresholds(server_dir):  # noqa: F811
    """postgres needs none of the server's secrets (it trusts local connections), but inherited
    run.py's environment: the signing secret of YAPTIDE_AUTH_SECRET (whoever holds it forges any
    user's tokens) and PGPASSWORD sat in the postmaster's /proc/<pid>/environ, which as root
    belongs to the account `pgserver`, and which any superuser session reads with SQL. It is
    given glibc malloc thresholds where the operator has set none (server/database/embedded.py)."""
    data = server_dir / "data"
    pgdata = data / "postgres"
    server = Server(
        server_dir,
        YAPTIDE_DATABASE_DATA_DIR=str(data),
        YAPTIDE_AUTH_SECRET=SIGNING_SECRET,
        PGPASSWORD=PG_PASSWORD,
        MALLOC_MMAP_THRESHOLD_=OPERATORS_MMAP_THRESHOLD,
    )
    try:
        server.wait_ready()
        first = postmaster_pid(pgdata)
        check_environment(pgdata, first)
        # Stopped under the server: started again by it (embedded.keep_running), likewise.
        os.kill(first, signal.SIGINT)
        deadline = time.monotonic() + 30
        while (pid := postmaster_pid(pgdata)) in (None, first) or not running(pid):
            assert time.monotonic() < deadline, "postgres was not started again"
            time.sleep(0.2)
        check_environment(pgdata, pid)
        assert server.stop() == 0
    finally:
        server.kill()
        for postmaster in postgres_processes(pgdata):
            postmaster.send_signal(signal.SIGINT)
