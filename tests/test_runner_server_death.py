"""What a real `run.py` leaves behind when it stops (SIGTERM) or dies (SIGKILL) with
simulations running under the local runner: nothing. The built-in worker (`python -m
server.worker`) runs a fake SHIELD-HIT12A that ignores SIGTERM and has a child of its own."""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.simulators import averaging_payload
from tests.helpers import pid_alive, processes_of
from tests.servers import free_port, start, wait_ready

# A "simulator" that ignores SIGTERM, starts a child that ignores it too, records both pids,
# and then runs for two minutes.
STUBBORN_SIMULATOR = r"""#!{python}
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
job_dir = Path(os.environ["YAPTIDE_JOB_DIR"])
task = os.environ["YAPTIDE_TASK_ID"]
child = os.fork()
if child == 0:
    time.sleep(120)
    os._exit(0)
print("Primary particle no.  1", flush=True)
(job_dir / f"simpids_{{task}}").write_text(f"{{os.getpid()}} {{child}} {{os.getppid()}}")
time.sleep(120)
"""


def simulator(tmp_path: Path) -> Path:
    path = tmp_path / "shieldhit"
    path.write_text(STUBBORN_SIMULATOR.format(python=sys.executable))
    # As installed, for any account (a server run as root runs its tasks as users of their own).
    path.chmod(0o755)
    tmp_path.chmod(0o711)
    return path


async def running_server(
    database_url: str, tmp_path: Path, port: int, sandbox: str, inherited: tuple[int, ...] = ()
):
    env = {
        "YAPTIDE_RUNNER_KIND": "local",
        "YAPTIDE_RUNNER_SANDBOX": sandbox,
        "YAPTIDE_RUNNER_SLOTS": "2",
        "YAPTIDE_RUNNER_GRACE_PERIOD": "1",
        "YAPTIDE_RUNNER_PROGRESS_INTERVAL": "0.5",
        "YAPTIDE_SIMULATORS_SHIELDHIT": str(simulator(tmp_path)),
        "YAPTIDE_SERVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    return start(database_url, tmp_path / "data", port, pass_fds=inherited, **env)


async def submit_two_tasks(
    http: aiohttp.ClientSession, base: str, job_root: Path, sandbox: str
) -> tuple:
    user = {"username": "alice", "password": "password1"}
    async with http.put(base + "/auth/register", json=user) as response:
        assert response.status in (201, 400, 409), await response.text()
    async with http.post(base + "/auth/login", json=user) as response:
        assert response.status == 202, await response.text()
    async with http.post(base + "/jobs/direct", json=averaging_payload(ntasks=2)) as response:
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]
    job_dir = job_root / job_id
    deadline = time.monotonic() + 60
    while not all((job_dir / f"simpids_{n}").exists() for n in (1, 2)):
        assert time.monotonic() < deadline, "the simulators never started"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    pids = []
    for n in (1, 2):
        sim, child, worker = map(int, (job_dir / f"simpids_{n}").read_text().split())
        pids += [("worker", worker), ("simulator", sim), ("simulator's child", child)]
    if sandbox == "on":  # those are the sandbox's own pids: what this host calls them
        pids = [("process", pid) for pid in processes_of(job_id)]
        # per task: bwrap, its reaper, (as root: the inner bwrap,) worker, simulator, child
        assert len(pids) == 2 * (5 if os.geteuid() else 6), pids
    assert all(pid_alive(pid) for _, pid in pids)
    return job_id, pids


def alive(pids) -> list:
    """The pids still running (zombies, which have exited, do not count)."""
    found = []
    for what, pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append((what, pid))
    return found


def kill_all(pids) -> None:
    for _, pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def two_tasks_running(
    database_url: str, tmp_path: Path, sandbox: str = "off", inherited: tuple[int, ...] = ()
) -> AsyncIterator[tuple]:
    """(run.py's process, job_id, the job's processes) while a 2-task job runs, run.py given
    the descriptors `inherited`; what is left of them is killed after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await running_server(database_url, tmp_path, port, sandbox, inherited)
    pids: list = []
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await wait_ready(http, base, process)
            job_root = tmp_path / "data" / "jobs"
            job_id, pids = await submit_two_tasks(http, base, job_root, sandbox)
        yield process, job_id, pids
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_all(pids)


@pytest.fixture(params=["off", "on"])
def sandbox(request: pytest.FixtureRequest) -> str:
    """runner.sandbox: each test with workers as plain processes, and in the sandbox (bwrap),
    where the server's end reaches them through bwrap (--die-with-parent)."""
    if request.param == "on":
        request.getfixturevalue("bwrap")
    return request.param


async def test_sigterm_to_run_py_leaves_no_process(database_url, conn, tmp_path, sandbox):
    async with two_tasks_running(database_url, tmp_path, sandbox) as (process, job_id, pids):
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
        await asyncio.sleep(0.5)
        assert alive(pids) == []
    state = await conn.fetchval("SELECT job_state FROM simulations WHERE job_id = $1", job_id)
    assert state == "FAILED"


async def test_a_server_killed_leaves_no_process(database_url, conn, tmp_path, sandbox):
    """A server that dies (SIGKILL, the OOM killer, a crash) can stop nothing: each built-in
    worker watches it and kills its own process group (itself, its simulator and the
    simulator's child) once it is gone. Before, all six lived on (in sessions of their own),
    while the next start told the user they "did not survive" (restart_text)."""
    async with two_tasks_running(database_url, tmp_path, sandbox) as (process, _, pids):
        process.kill()
        process.wait()
        await asyncio.sleep(5)
        left = alive(pids)
        assert left == [], f"5 s after the server died, still running: {left}"


async def test_a_descriptor_run_py_inherited_reaches_no_task(database_url, tmp_path, sandbox):
    """uvloop starts processes with every descriptor that is not closed on exec (it has no
    close_fds): one that run.py's own parent left open to it (here a pipe) reached every
    worker, in the sandbox too (bwrap and the processes in it). run.py closes them on exec."""
    reading, writing = os.pipe()
    os.set_inheritable(writing, True)
    pipe = f"pipe:[{os.fstat(writing).st_ino}]"
    try:
        async with two_tasks_running(database_url, tmp_path, sandbox, (writing,)) as (*_, pids):
            holding = [(what, pid) for what, pid in pids if pipe in descriptors(pid)]
    finally:
        os.close(reading)
        os.close(writing)
    assert holding == []


def descriptors(pid: int) -> list[str]:
    """What the descriptors of the process `pid` are (`pipe:[inode]`, paths)."""
    with contextlib.suppress(FileNotFoundError):  # it ended
        return [os.readlink(entry) for entry in Path(f"/proc/{pid}/fd").iterdir()]
    return []
