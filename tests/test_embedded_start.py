"""An embedded PostgreSQL that cannot start: run.py ends with one line saying why, and leaves
no postgres running."""

import subprocess
import sys
from pathlib import Path

from tests.test_cli import postgres_processes, run_py, server_dir  # noqa: F401  (fixture)

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
