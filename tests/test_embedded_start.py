"""An embedded PostgreSQL that cannot start: run.py ends with one line saying why, and leaves
no postgres running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.database.embedded import MAKING
from tests.test_cli import (  # noqa: F401  (server_dir: a fixture)
    RUN_PY,
    environment,
    postgres_processes,
    run_py,
    server_dir,
)

# A start of the embedded server, with a connection open when it is stopped: postgres logs a
# FATAL line for that connection, as at every stop of a server with clients.
HELD_AT_STOP = """
import asyncio, sys
from pathlib import Path
import asyncpg
from server.database.embedded import embedded_postgres

async def connect(url):
    return await asyncpg.connect(url)

with embedded_postgres(Path(sys.argv[1]), restart=False) as url:
    conn = asyncio.run(connect(url))  # left open: the stop terminates it
"""


def slow_start(data: Path) -> subprocess.CompletedProcess:
    """`run.py migrate` on a database whose start takes longer than pgserver waits (10 s): an
    archive recovery whose restore_command is slow (a long crash recovery looks the same; it
    writes no FATAL line); whatever postgres is left is killed after."""
    pgdata = data / "postgres"
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write("restore_command = 'sleep 25'\n")
    (pgdata / "recovery.signal").touch()
    try:
        result = run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)})
        result.stdout += "".join(f"left running: {p.pid}\n" for p in postgres_processes(pgdata))
    finally:
        for process in postgres_processes(pgdata):
            process.kill()
    return result


def test_the_reason_is_the_one_of_this_start_not_an_older_line_of_the_log(server_dir):  # noqa: F811
    """The postgres log keeps every start and stop: a FATAL line of an earlier, normal stop
    (a client's connection ended by it) was given as the reason a later start failed."""
    data = server_dir / "data"
    assert run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)}).returncode == 0
    stop = subprocess.run([sys.executable, "-c", HELD_AT_STOP, str(data)], capture_output=True)
    assert stop.returncode == 0, stop.stderr
    assert "FATAL:  terminating connection" in (data / "postgres" / "log").read_text()
    result = slow_start(data)
    assert result.returncode == 1, result
    assert "terminating connection" not in result.stderr, result.stderr
    assert "timed out" in result.stderr, result.stderr


def test_a_start_that_times_out_leaves_no_postgres_running(server_dir):  # noqa: F811
    """README: an expected failure ends the command with one line. pgserver gives pg_ctl 10 s;
    a postgres still starting then kept running after run.py had ended with its error:
    unwatched, holding the data directory of no server."""
    data = server_dir / "data"
    assert run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)}).returncode == 0
    result = slow_start(data)
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_first_start_killed_while_it_makes_the_database_makes_it_at_the_next(
    server_dir,  # noqa: F811
):
    """A first start killed with its process group during initdb (a container stopped, an OOM
    kill) left a half-made cluster that pgserver took as made: every later start failed with
    "database postgres does not exist". The database is made beside its place and renamed into
    it once whole."""
    data = server_dir / "data"
    env = environment(YAPTIDE_DATABASE_DATA_DIR=str(data))
    first = subprocess.Popen([sys.executable, RUN_PY, "migrate"], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (data / MAKING / "PG_VERSION").exists():  # initdb under way
        assert first.poll() is None and time.monotonic() < deadline, "initdb not seen"
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (data / "postgres" / "PG_VERSION").exists()
    result = run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert (data / "postgres" / "PG_VERSION").exists() and not (data / MAKING).exists()
    assert postgres_processes(data / "postgres") == []


def test_a_data_dir_too_long_for_the_socket_stops_the_start(server_dir):  # noqa: F811
    """pgserver put the socket of such a data directory in a directory of the shared temporary
    one, which it made world-writable as root: any account could move the socket away and
    serve the server's database connections itself. The start stops with one line instead."""
    data = server_dir / ("d" * 90)
    result = run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)})
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.startswith(f"Configuration error: database.data_dir: {data} is too long")
    assert result.stderr.count("\n") == 1, result.stderr
    assert not data.exists()  # nothing made for a directory that cannot serve


def test_a_data_dir_that_cannot_be_made_stops_the_start_naming_its_key(server_dir):  # noqa: F811
    data = server_dir / "a file"
    data.write_text("not a directory")
    result = run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(data)})
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Configuration error: database.data_dir: {data}: File exists"
        " (set by YAPTIDE_DATABASE_DATA_DIR)\n",
    )
