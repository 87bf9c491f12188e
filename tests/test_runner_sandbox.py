"""The local runner's sandbox (server/runner/local/sandbox/, bubblewrap): a task sees its own
job and nothing of the server: not its data directory (the signing secret, the database, other
jobs), not its configuration file, not its processes. Runs a real bwrap (the `bwrap` fixture
installs it as root); the built-in worker's runs in it are in tests/test_worker.py and
tests/test_runner_server_death.py."""

import asyncio
import dataclasses
import functools
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.config import PROJECT_DIR
from server.runner.local.sandbox import lines, probe
from server.runner.local.sandbox.jobusers import JOB_ACCOUNTS, job_account
from server.runner.local.sandbox.lines import SOCKET_DIRS, socket_dirs
from tests.helpers import (
    eventually,
    job_dir_of,
    payload,
    processes_of,
    start_local,
    states_are,
    status,
    submit,
)
from tests.servers import RUN_PY, free_port

# What the filter of system calls answers (and a TCP socket, which it allows).
FILTERED = {
    "keyctl": "EPERM",
    "io_uring_setup": "ENOSYS",
    "AF_VSOCK": "EAFNOSUPPORT",
    "AF_VSOCK pair": "EAFNOSUPPORT",
    "UDP-Lite": "EPROTONOSUPPORT",
    "AF_INET": "ok",
}
CONFIG_TEXT = '[auth]\nsecret = "a secret of the configuration file, 32+ chars"\n'


def probe_mode(config_file: Path, data: Path, sandbox: str) -> str:
    """The fake worker's `probe` of what a task must not see and, in the sandbox, of where it
    may write (not without: it would write into this host's /tmp and the project)."""
    paths = [f"{data}/secret_key", f"{data}", f"{data}/jobs", f"{config_file}"]
    if sandbox == "on":
        paths += ["+written", "+/tmp/written", f"+{PROJECT_DIR}/written", "userns", "syscalls"]
    paths.append(f"/proc/{os.getpid()}/environ")
    return " ".join(["probe", *paths])


async def probed(start_app, tmp_path: Path, sandbox: str) -> tuple[dict, str, Path]:
    """(what the probe saw, the job_id, the job directory) of a 1-task job run with `sandbox`,
    the app's configuration read from a file of its own."""
    config_file = tmp_path / "config.toml"
    config_file.write_text(CONFIG_TEXT)
    data = tmp_path / "data"
    (data / "jobs" / "someone-elses-job").mkdir(parents=True)
    mode = probe_mode(config_file, data, sandbox)
    client, _, config = await start_app(mode, sandbox=sandbox)
    job_id = await submit(client, ntasks=1)
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    job_dir = job_dir_of(config, job_id)
    return json.loads((job_dir / "probe_1.json").read_text()), job_id, job_dir


@pytest.fixture
def start_app(aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn, tmp_path):
    """start_app(mode, **runner) -> (client, recorder, config): an app whose local runner runs
    the fake worker in `mode` (tests/helpers.py start_local), its configuration read from a
    file (which tasks must not see)."""

    def from_file(**sections):
        return dataclasses.replace(make_config(**sections), file=str(tmp_path / "config.toml"))

    ports = unused_tcp_port_factory
    return functools.partial(start_local, aiohttp_server, aiohttp_client, ports, from_file)


async def test_a_task_sees_its_job_and_nothing_of_the_server(start_app, tmp_path, bwrap):
    seen, job_id, job_dir = await probed(start_app, tmp_path, "on")
    data = tmp_path / "data"
    assert seen == {
        f"{data}/secret_key": {"error": "ENOENT"},
        f"{data}": {"list": ["jobs"]},
        f"{data}/jobs": {"list": [job_id]},
        f"{tmp_path}/config.toml": {"error": "EACCES"},
        "+written": {"wrote": True},
        "+/tmp/written": {"wrote": True},
        f"+{PROJECT_DIR}/written": {"error": "EROFS"},
        "userns": {"error": "ENOSPC"},  # none may be made: bwrap's --disable-userns
        "syscalls": FILTERED,
        f"/proc/{os.getpid()}/environ": {"error": "ENOENT"},
        # bwrap's reaper, (as root: the inner bwrap, which forbids user namespaces) the worker
        "processes": [1, 2] if os.geteuid() else [1, 2, 3],
    }
    assert (job_dir / "task_1" / "written").read_text() == "probe"
    assert not Path("/tmp/written").exists()
    assert not (PROJECT_DIR / "written").exists()
    assert (data / "secret_key").is_file() and (data / "jobs" / "someone-elses-job").is_dir()


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp (which the sandbox replaces as a whole), removed after."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


async def test_the_account_s_database_password_files_and_ssh_agent_are_hidden(
    start_app, outside_tmp, monkeypatch, bwrap
):
    """libpq's password and service files where PGPASSFILE and PGSERVICEFILE put them (asyncpg
    reads them too), and the SSH agent's socket, which signs this account in to the clusters."""
    for name in ("pgpass", "pg_service.conf"):
        (outside_tmp / name).write_text("db.example.org:5432:*:yaptide:a password\n")
        (outside_tmp / name).chmod(0o600)
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(outside_tmp / "agent"))
    monkeypatch.setenv("PGPASSFILE", str(outside_tmp / "pgpass"))
    monkeypatch.setenv("PGSERVICEFILE", str(outside_tmp / "pg_service.conf"))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(outside_tmp / "agent"))
    paths = [str(outside_tmp / name) for name in ("pgpass", "pg_service.conf", "agent")]
    client, _, config = await start_app(" ".join(["probe", *paths]), sandbox="on")
    job_id = await submit(client, ntasks=1)
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    seen = json.loads((job_dir_of(config, job_id) / "probe_1.json").read_text())
    agent.close()
    assert [seen[path] for path in paths] == [{"error": "EACCES"}] * 3


def root_files(directory: Path) -> list[str]:
    """Two files of root's, in a directory any account may search: one only root may read (as
    /etc/shadow or the SSH host keys are), one any account may. The probe's paths, with an
    input file of the task's own (written by the server) and the files it writes (in its
    directory, and in /dev/shm as POSIX shared memory and semaphores do)."""
    directory.chmod(0o755)
    for name, mode in (("private", 0o600), ("public", 0o644)):
        (directory / name).write_text(f"root's {name} file")
        (directory / name).chmod(mode)
    files = [str(directory / "private"), str(directory / "public"), "beam.dat"]
    return [*files, "+written", "+/dev/shm/written", "userns"]


async def probe_root_files(start_app, directory: Path) -> tuple[list[dict], Path]:
    """What a task saw of root_files(`directory`), and the file it wrote in its directory."""
    paths = root_files(directory)
    client, _, config = await start_app(" ".join(["probe", *paths]), sandbox="on")
    job_id = await submit(client, ntasks=1)
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    seen = json.loads((job_dir_of(config, job_id) / "probe_1.json").read_text())
    return [seen[path] for path in paths], job_dir_of(config, job_id) / "task_1" / "written"


BEAM = {"read": payload()["input_files"]["beam.dat"][:64]}
WROTE = {"wrote": True}
NO_USERNS = {"error": "ENOSPC"}  # bwrap's --disable-userns


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """The server's umask while it writes a job's files (077: systemd's UMask=0077)."""
    previous = os.umask(request.param)
    yield
    os.umask(previous)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as root (as in CI)")
async def test_as_root_tasks_run_as_a_user_of_their_job(start_app, outside_tmp, umask, bwrap):
    """Mapped to root in its user namespace, a task read every file root owns: under root the
    sandbox is set up with root's privileges and the task runs as a user and group of its job's
    own, with no capability, which no other process of the host has. It reads its input files
    whatever the server's umask. (This Python may be under /root, which that user may not
    enter: it is reached all the same.)"""
    seen, written = await probe_root_files(start_app, outside_tmp)
    assert seen == [
        {"error": "EACCES"},
        {"read": "root's public file"},
        BEAM,
        *[WROTE] * 2,
        NO_USERNS,
    ]
    job_dir = written.parent.parent
    account = job_account(job_dir)
    assert JOB_ACCOUNTS <= account < JOB_ACCOUNTS + 2**20
    assert (written.stat().st_uid, written.stat().st_gid) == (account, account)
    assert (job_dir.stat().st_uid, job_dir.stat().st_mode & 0o777) == (account, 0o700)
    with pytest.raises(KeyError):
        pwd.getpwuid(account)  # no account of the host is this user


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as root (as in CI)")
@pytest.mark.parametrize("inner", [True, False], ids=["inner-bwrap", "no-inner-bwrap"])
def test_as_root_a_task_goes_to_its_directory_as_its_job_s_user(
    make_config, outside_tmp, bwrap, inner
):
    """A running task owns its job directory, so it may put a link in place of the next task's
    directory, to one its user may not reach (in a 0700 directory of someone's). The next task
    goes there as its job's user, not with root's setup privileges: it does not start."""
    someones = outside_tmp / "someones"
    (someones / "public").mkdir(parents=True)
    (someones / "public" / "file").write_text("someone's file")
    someones.chmod(0o700)
    outside_tmp.chmod(0o755)
    job_dir = outside_tmp / "jobs" / "a-job"
    job_dir.mkdir(parents=True)
    (job_dir / "task_2").symlink_to(someones / "public")
    config = make_config(runner={"kind": "local", "sandbox": "on"})
    found = lines.Sandbox(bwrap, shutil.which("setpriv"), inner)
    with lines.wrapped(config, found, ["cat", "file"], job_dir, job_dir / "task_2") as launch:
        ran = subprocess.run(launch.line, capture_output=True, text=True, timeout=30)
    assert (ran.returncode, ran.stdout) != (0, "someone's file")
    assert ran.returncode != 0 and ran.stdout == ""
    assert f"{job_dir}/task_2: Permission denied" in ran.stderr.replace("'", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as root (as in CI)")
async def test_as_root_a_simulator_the_jobs_users_cannot_reach_is_said_at_start(
    make_config, outside_tmp, caplog, bwrap
):
    """A simulator in a directory only root may enter (0700, as pytest's and `mktemp -d`'s
    are) would fail every task that runs it: the start says so, naming the directory."""
    closed = outside_tmp / "closed"
    closed.mkdir(mode=0o700)
    (closed / "shieldhit").write_text("#!/bin/sh\n")
    (closed / "shieldhit").chmod(0o755)
    simulators = {"shieldhit": str(closed / "shieldhit")}
    config = make_config(runner={"kind": "local", "sandbox": "on"}, simulators=simulators)
    with caplog.at_level(logging.WARNING, logger="server.runner.local.sandbox"):
        found = await probe.find(config)
    assert found is not None and found.setpriv is not None
    assert [record.getMessage() for record in caplog.records] == [
        f"tasks run as users of their jobs, who may not enter {closed} (mode 700): a program "
        'there cannot run (README, "The workers\' sandbox")'
    ]
    caplog.clear()
    closed.chmod(0o755)
    await probe.find(config)
    assert caplog.records == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as root (as in CI)")
async def test_as_root_without_setpriv_the_sandbox_maps_to_root_and_says_so(
    start_app, outside_tmp, tmp_path, monkeypatch, caplog, bwrap
):
    """A host without setpriv (util-linux): tasks still run in the sandbox, as root there, so
    they read root's files outside the hidden paths; the start said so, once."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bwrap").symlink_to(bwrap)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with caplog.at_level(logging.WARNING, logger="server.runner.local.sandbox"):
        seen, written = await probe_root_files(start_app, outside_tmp)
    assert seen == [
        {"read": "root's private file"},
        {"read": "root's public file"},
        BEAM,
        *[WROTE] * 2,
        NO_USERNS,
    ]
    assert written.stat().st_uid == 0
    assert [record.getMessage() for record in caplog.records] == [
        "this server runs as root and its tasks cannot run as users of their own (setpriv "
        "(Debian package util-linux) is not installed): their sandbox maps them to root, and "
        'they read what root may outside the hidden paths (README, "The workers\' sandbox")'
    ]


def refusing_bwrap(directory: Path, bwrap: str, refusal: str) -> str:
    """A PATH of a bwrap that says "no, not here" and fails when the shell condition `refusal`
    holds, and runs `bwrap` when not; and of setpriv, when this host has it."""
    found = directory / "bin"
    found.mkdir(mode=0o755)
    script = f'if {refusal}; then echo "no, not here" >&2; exit 1; fi\nexec {bwrap} "$@"\n'
    (found / "bwrap").write_text("#!/bin/sh\n" + script)
    (found / "bwrap").chmod(0o755)
    for program in filter(None, [shutil.which("setpriv")]):
        (found / "setpriv").symlink_to(program)
    return str(found)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as root (as in CI)")
async def test_as_root_without_the_inner_bwrap_tasks_may_make_user_namespaces_and_it_is_said(
    start_app, outside_tmp, monkeypatch, caplog, bwrap
):
    """A host where the jobs' users cannot run bwrap (here: a bwrap that refuses any account
    but root, as where unprivileged user namespaces are off): tasks still run as their job's
    user, only they may make user namespaces; the start said so, once."""
    not_root = f'[ "$({shutil.which("id")} -u)" != 0 ]'
    monkeypatch.setenv("PATH", refusing_bwrap(outside_tmp, bwrap, not_root))
    with caplog.at_level(logging.WARNING, logger="server.runner.local.sandbox"):
        seen, written = await probe_root_files(start_app, outside_tmp)
    public = {"read": "root's public file"}
    assert seen == [{"error": "EACCES"}, public, BEAM, *[WROTE] * 2, {"made": True}]
    assert written.stat().st_uid == job_account(written.parent.parent)
    assert [record.getMessage() for record in caplog.records] == [
        "tasks run as users of their jobs, but not in a bwrap of their own that forbids them user "
        "namespaces (bwrap does not work here: no, not here): where this host lets any account "
        "make them, so may they"
    ]


async def test_where_the_filter_cannot_be_applied_tasks_run_without_it_and_it_is_said(
    start_app, outside_tmp, monkeypatch, caplog, bwrap
):
    """A bwrap that cannot apply the filter of system calls (here: one that refuses
    `--seccomp`): tasks run in the sandbox without it; the start said so, once."""
    outside_tmp.chmod(0o755)
    filtered = 'case " $* " in *" --seccomp "*) true;; *) false;; esac'
    monkeypatch.setenv("PATH", refusing_bwrap(outside_tmp, bwrap, filtered))
    with caplog.at_level(logging.WARNING, logger="server.runner.local.sandbox"):
        client, _, config = await start_app("probe syscalls", sandbox="on")
    job_id = await submit(client, ntasks=1)
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    seen = json.loads((job_dir_of(config, job_id) / "probe_1.json").read_text())
    assert seen["syscalls"]["keyctl"] == "ok"
    assert [record.getMessage() for record in caplog.records] == [
        "tasks run without a filter of their system calls (bwrap does not work here: no, not "
        "here): they may use every part of the kernel this host lets any account use (README, "
        '"The workers\' sandbox")'
    ]


async def test_without_bwrap_auto_warns_and_runs_tasks_unsandboxed(
    start_app, tmp_path, monkeypatch, caplog
):
    """What "auto" does on a host without bubblewrap (PATH without it here): the task runs,
    and reads what the sandbox would have hidden; the start said so, once."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="server.runner.local.sandbox"):
        seen, _, _ = await probed(start_app, tmp_path, "auto")
    data = tmp_path / "data"
    assert seen[f"{data}/secret_key"] == {"read": (data / "secret_key").read_text()[:64]}
    assert seen[f"{tmp_path}/config.toml"] == {"read": CONFIG_TEXT}
    assert seen[f"{data}/jobs"]["list"] == sorted(os.listdir(data / "jobs"))
    assert [record.getMessage() for record in caplog.records] == [
        'runner.sandbox = "auto": no sandbox, as bwrap (Debian package bubblewrap) is not '
        "installed; simulations can read every file this account can (README, \"The workers' "
        'sandbox")'
    ]


async def test_a_cancel_ends_every_process_of_the_sandbox(start_app, bwrap):
    """Workers that ignore SIGTERM: SIGKILL after the grace period reaches the sandbox's
    processes too (bwrap's reaper keeps the runner's process group)."""
    client, _, _ = await start_app("hang stubborn", sandbox="on", slots=2)
    job_id = await submit(client, ntasks=2)
    await eventually(states_are(client, job_id, "RUNNING", "RUNNING"))
    # per task: bwrap, its reaper, (as root: the inner bwrap,) the worker
    assert len(processes_of(job_id)) == 2 * (3 if os.geteuid() else 4)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await eventually(lambda: asyncio.sleep(0, processes_of(job_id) == []), timeout=5)
    tasks = (await status(client, job_id))["job_tasks_status"]
    assert [task["task_state"] for task in tasks] == ["CANCELED"] * 2


async def test_a_cancel_gives_the_sandbox_s_processes_their_grace(start_app, bwrap):
    """bwrap ends at SIGTERM and passes none on: a SIGTERM to the whole process group ended
    everything in the sandbox at once. Only the processes in it get it now: a worker that takes
    a moment to end at SIGTERM ends as it means to, within runner.grace_period."""
    client, _, config = await start_app("hang graceful", sandbox="on", slots=2)
    job_id = await submit(client, ntasks=2)
    await eventually(states_are(client, job_id, "RUNNING", "RUNNING"))
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await eventually(lambda: asyncio.sleep(0, processes_of(job_id) == []), timeout=5)
    assert sorted(path.name for path in job_dir_of(config, job_id).glob("terminated_*")) == [
        "terminated_1",
        "terminated_2",
    ]


FAILING_BWRAP = "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"


@pytest.mark.parametrize(
    ("program", "why"),
    [
        (None, "bwrap (Debian package bubblewrap) is not installed"),
        (FAILING_BWRAP, "bwrap does not work here: bwrap: No permissions to create new namespace"),
    ],
)
def test_on_without_a_working_bwrap_refuses_to_start(database_url, tmp_path, program, why):
    """No bwrap on PATH, or one that cannot make its namespaces (as in some containers)."""
    if program is not None:
        (tmp_path / "bwrap").write_text(program)
        (tmp_path / "bwrap").chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")},
        "PATH": str(tmp_path),
        "DATABASE_URL": database_url,
        "YAPTIDE_SERVER_PORT": str(free_port()),
        "YAPTIDE_DATABASE_DATA_DIR": str(tmp_path / "data"),
        "YAPTIDE_RUNNER_KIND": "local",
        "YAPTIDE_RUNNER_SANDBOX": "on",
    }
    result = subprocess.run(
        [sys.executable, RUN_PY], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f'Configuration error: runner.sandbox = "on", but {why} (set by YAPTIDE_RUNNER_SANDBOX)'
    )


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://yaptide:secret@db.example.org:5432/yaptide", []),
        ("postgresql://yaptide@%2Fsrv%2Fpg/yaptide", ["/srv/pg"]),
        ("postgresql:///yaptide?host=/srv/pg,/srv/other&port=5433", ["/srv/pg", "/srv/other"]),
        ("postgresql:///yaptide?host=db.example.org", []),
    ],
)
def test_database_socket_directories_are_hidden(url, named, monkeypatch):
    """A database reached through a Unix socket lets this account in without a password (peer
    authentication): the sandbox hides the socket's directory, wherever the URL puts it."""
    monkeypatch.delenv("PGHOST", raising=False)
    assert socket_dirs(url) == [Path(path) for path in (*SOCKET_DIRS, *named)]
