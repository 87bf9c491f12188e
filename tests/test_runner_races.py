"""The local runner's job lifecycle where things meet: merges and slots, a database stall as a
queued task starts, a cancel during the merge, workers that ignore SIGTERM. Real processes, a
real database and real HTTP.

The worker these tests run is a small script written into the test's directory (WORKER below):
it speaks the worker protocol over HTTP like tests/fakes/worker.py, and records when each of its
processes (tasks and merge steps) ran.
"""

import asyncio
import os
import shlex
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import (
    eventually,
    job_dir_of,
    logfiles_of,
    payload,
    pid_alive,
    start_local,
    states_are,
    status,
    submit,
)

WORKER = r"""
import json, os, sys, time, urllib.request
from pathlib import Path

URL = os.environ["YAPTIDE_URL"]
JOB_ID = os.environ["YAPTIDE_SIMULATION_ID"]
TASK_ID = int(os.environ.get("YAPTIDE_TASK_ID", "0"))
JOB_DIR = Path(os.environ["YAPTIDE_JOB_DIR"])
KEY = os.environ["YAPTIDE_UPDATE_KEY"]
TIMES = Path(sys.argv[1])  # one line per process: job, what, start, end


def post(path, body):
    request = urllib.request.Request(
        URL + path,
        data=json.dumps({"simulation_id": JOB_ID, **body}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202, response.status


def task(**update):
    post("/tasks", {"task_id": TASK_ID, "update_dict": update})


start = time.time()
mode = sys.argv[2]
if sys.argv[-1] == "merge":
    (JOB_DIR / "merge_pid").write_text(str(os.getpid()))
    manifests = sorted(p.parent.name for p in JOB_DIR.glob("task_*/.yaptide_results.json"))
    (JOB_DIR / "merged_tasks").write_text(" ".join(manifests))
    time.sleep(float(os.environ.get("LIFECYCLE_MERGE_SECONDS", "1.5")))
    post("/jobs", {"job_state": "MERGING_RUNNING"})
    page = {"page_number": 1, "data": {"values": [1.0]}}
    post("/results", {"estimators": [{"name": "merged", "pages": [page]}]})
    what = "merge"
elif mode == "sleep":
    task(task_state="RUNNING")
    time.sleep(float(sys.argv[3]))
    task(task_state="COMPLETED")
    what = f"task_{TASK_ID}"
elif mode == "fail":  # RUNNING, then FAILED once <job dir>/go exists (if asked to wait)
    task(task_state="RUNNING")
    while len(sys.argv) > 3 and not (JOB_DIR / "go").exists():
        time.sleep(0.02)
    task(task_state="FAILED")
    what = f"task_{TASK_ID}"
elif mode == "manifest":  # result files listed for the merge; task 2 then dies unreported
    task(task_state="RUNNING")
    Path(".yaptide_results.json").write_text('{"files": []}')
    if TASK_ID == 2:
        os._exit(9)
    task(task_state="COMPLETED")
    what = f"task_{TASK_ID}"
elif mode == "scribble":  # ignores SIGTERM; writes files into its task directory until killed
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    task(task_state="RUNNING")
    (JOB_DIR / f"running_{TASK_ID}").touch()
    n = 0
    while True:
        n += 1
        try:
            Path(f"part_{n % 64}").write_text("x")
        except OSError:
            pass
with open(TIMES, "a") as out:
    out.write(f"{JOB_ID} {what} {start} {time.time()}\n")
"""


@pytest.fixture
def start_app(aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn):
    return partial(
        start_local, aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config
    )


def worker_command(tmp_path: Path, *args: str) -> str:
    script = tmp_path / "lifecycle_worker.py"
    script.write_text(WORKER)
    times = tmp_path / "times.log"
    return shlex.join([sys.executable, str(script), str(times), *args])


def most_at_once(times: Path) -> tuple[int, list[str]]:
    rows = [line.split() for line in times.read_text().splitlines()]
    spans = [(float(start), float(end)) for _, _, start, end in rows]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    return peak, [f"{job[:8]} {what} {float(s):.2f}-{float(e):.2f}" for job, what, s, e in rows]


async def test_merge_steps_count_against_the_slots(start_app, conn, tmp_path):
    """README: "At most `runner.slots` processes run at once", merge steps too (a process of
    the worker command, which reads and averages every task's files). With slots = 1, a job's
    merge ran beside the next job's task before: two processes at once."""
    command = worker_command(tmp_path, "sleep", "1.5")
    client, _, _ = await start_app("unused", slots=1, command=command)
    first = await submit(client, payload(ntasks=1))
    second = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, first, "COMPLETED"), timeout=30)
    await eventually(states_are(client, second, "COMPLETED"), timeout=30)
    peak, rows = most_at_once(tmp_path / "times.log")
    assert peak <= 1, f"{peak} processes at once with runner.slots = 1: {rows}"


async def test_a_task_start_meeting_a_database_stall_is_not_left_pending_for_ever(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn, tmp_path
):
    """A queued task's start reads the simulation's input from the database. A read that meets
    a database not answering within `database.command_timeout` (here the table is locked by
    another session for 3 s, with a 1 s timeout) is tried again, as the runner's writes are:
    the task starts once the database answers. Before, the TimeoutError ended the runner's
    coroutine: no process started, and the task and its job stayed PENDING for ever."""

    def with_timeout(**sections):
        return make_config(database={"command_timeout": 1.0}, **sections)

    command = worker_command(tmp_path, "fail", "wait")
    client, _, config = await start_local(
        aiohttp_server,
        aiohttp_client,
        unused_tcp_port_factory,
        with_timeout,
        "unused",
        slots=1,
        command=command,
    )
    first = await submit(client, payload(ntasks=1))  # takes the one slot until <job dir>/go
    queued = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, first, "RUNNING"), timeout=30)
    assert (await status(client, queued))["job_state"] == "PENDING"
    await conn.execute("BEGIN")
    await conn.execute("LOCK TABLE inputs IN ACCESS EXCLUSIVE MODE")
    (job_dir_of(config, first) / "go").touch()  # the first task ends; the queued one starts
    await eventually(states_are(client, first, "FAILED"), timeout=30)
    await asyncio.sleep(3)  # its input cannot be read for 3 s
    assert (await status(client, queued))["job_state"] == "PENDING"
    await conn.execute("ROLLBACK")  # the database answers again
    await eventually(states_are(client, queued, "RUNNING"), timeout=30)
    (job_dir_of(config, queued) / "go").touch()
    await eventually(states_are(client, queued, "FAILED"), timeout=30)
    assert await logfiles_of(conn) == {}  # its worker reported the end: no runner's log


async def test_a_delete_right_after_a_cancel_removes_the_job_directory(start_app, conn, tmp_path):
    """A cancel answers before its processes end (SIGTERM, SIGKILL after runner.grace_period),
    and a delete right after it cannot remove what a worker ignoring SIGTERM still writes: the
    runner removes the directory once the job's last process has ended. Before, it stayed
    until the hourly sweep."""
    command = worker_command(tmp_path, "scribble")
    client, _, config = await start_app("unused", slots=2, command=command, grace_period=1.0)
    job_id = await submit(client, payload(ntasks=2))
    job_dir = job_dir_of(config, job_id)

    async def running():
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(running)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    response = await client.delete("/user/simulations", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    await eventually(lambda: asyncio.sleep(0, not job_dir.exists()), timeout=10)


def zombies_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_a_cancel_during_the_merge_stops_it(start_app, conn, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_MERGE_SECONDS", "30")
    command = worker_command(tmp_path, "sleep", "0.1")
    client, _, config = await start_app("unused", slots=2, command=command)
    job_id = await submit(client, payload(ntasks=2))
    merge_pid = job_dir_of(config, job_id) / "merge_pid"

    async def merging():
        return merge_pid.exists() and merge_pid.read_text()

    pid = int(await eventually(merging, timeout=30))
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await eventually(lambda: _gone(pid), timeout=5)
    body = await status(client, job_id)
    assert body["job_state"] == "CANCELED"
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
    await asyncio.sleep(0.5)
    assert zombies_of(os.getpid()) == []


async def test_cancelled_stubborn_workers_leave_no_zombie(start_app, conn, tmp_path):
    command = worker_command(tmp_path, "scribble")
    client, _, config = await start_app("unused", slots=2, command=command, grace_period=0.5)
    job_id = await submit(client, payload(ntasks=3))
    job_dir = job_dir_of(config, job_id)

    async def running():
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(running)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await asyncio.sleep(1.5)
    assert zombies_of(os.getpid()) == []
    assert not (job_dir / "running_3").exists()
    assert [t["task_state"] for t in (await status(client, job_id))["job_tasks_status"]] == [
        "CANCELED"
    ] * 3


async def _gone(pid: int) -> bool:
    return not pid_alive(pid)


async def test_a_task_failed_by_the_runner_is_not_merged(start_app, conn, tmp_path):
    """A worker that lists its result files for the merge (the manifest) and dies before its
    COMPLETED reaches the server: the runner marks the task FAILED and takes the manifest
    away, so the merge step merges the one COMPLETED task only. Before, it merged both into a
    COMPLETED job whose task 2 the server showed FAILED."""
    command = worker_command(tmp_path, "manifest")
    client, _, config = await start_app("unused", slots=2, command=command)
    job_id = await submit(client, payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=30)
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED", "FAILED"]
    assert (job_dir_of(config, job_id) / "merged_tasks").read_text() == "task_1"
