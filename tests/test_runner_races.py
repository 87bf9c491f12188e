"""The local runner where things meet: merges and slots, a database stall as a queued task
starts, a worker dying between listing its results and reporting them, cancels and deletes
during work or merge, workers that ignore SIGTERM. Real processes (the fake worker,
tests/fakes/worker.py), a real database and real HTTP."""

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from server.runner.local import process
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
    wait_gone,
)
from tests.test_runner_lifecycle import other_server


def spans(*job_dirs: Path) -> list[tuple[float, float]]:
    """The (start, end) of every timed process (tasks and merges) of the jobs."""
    files = [path for job_dir in job_dirs for path in job_dir.glob("times_*")]
    return [tuple(map(float, path.read_text().split())) for path in files]


async def test_merge_steps_count_against_the_slots(start_app, conn):
    """README: "At most `runner.slots` processes run at once", merge steps too (a process of
    the worker command, which reads and averages every task's files): a job's merge runs in
    the slot of its last task. With slots = 1, a job's merge ran beside the next job's task
    before: two processes at once."""
    client, _, config = await start_app("slots", slots=1)
    first = await submit(client, payload(ntasks=1))
    second = await submit(client, payload(ntasks=1))
    for job_id in (first, second):
        await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=30)
    timed = spans(job_dir_of(config, first), job_dir_of(config, second))
    assert len(timed) == 4  # two tasks, two merges
    assert max(sum(1 for s, e in timed if s <= t < e) for t, _ in timed) == 1, sorted(timed)


async def test_a_task_start_meeting_a_database_stall_is_not_left_pending_for_ever(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn
):
    """A queued task's start reads the simulation's input from the database. A read that meets
    a database not answering within `database.command_timeout` (here the table is locked by
    another session for 3 s, with a 1 s timeout) is tried again, as the runner's writes are:
    the task starts once the database answers. Before, the TimeoutError ended the runner's
    coroutine: no process started, and the task and its job stayed PENDING for ever."""

    def timing_out(**sections):
        return make_config(database={"command_timeout": 1.0}, **sections)

    servers = (aiohttp_server, aiohttp_client, unused_tcp_port_factory, timing_out)
    client, _, config = await start_local(*servers, "fail all", slots=1)
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


async def test_a_task_failed_by_the_runner_is_not_merged(start_app, conn):
    """A worker that lists its result files for the merge and dies before its COMPLETED
    reaches the server: the runner marks the task FAILED and takes the list away, so the merge
    step merges the one COMPLETED task only. Before, it merged both into a COMPLETED job whose
    task 2 the server showed FAILED."""
    client, _, config = await start_app("manifest", slots=2)
    job_id = await submit(client, payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=30)
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED", "FAILED"]
    assert (job_dir_of(config, job_id) / "merged").read_text() == "task_1"


async def two_running(start_app, mode: str, ntasks: int, grace_period: float):
    """(client, job_id, job directory) of a job whose first two tasks run `mode`."""
    client, _, config = await start_app(mode, slots=2, grace_period=grace_period)
    job_id = await submit(client, payload(ntasks=ntasks))
    job_dir = job_dir_of(config, job_id)

    async def running() -> bool:
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(running)
    return client, job_id, job_dir


async def test_a_delete_right_after_a_cancel_removes_the_job_directory(start_app, conn):
    """A cancel answers before its processes end (SIGTERM, SIGKILL after runner.grace_period),
    and a delete right after it cannot remove what a worker ignoring SIGTERM still writes: the
    runner removes the directory once the job's last process has ended. Before, it stayed
    until the hourly sweep."""
    client, job_id, job_dir = await two_running(start_app, "hang scribble", 2, 1.0)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    response = await client.delete("/user/simulations", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    await eventually(lambda: asyncio.sleep(0, not job_dir.exists()), timeout=10)


async def test_cancelled_stubborn_workers_leave_no_zombie(start_app, conn):
    client, job_id, job_dir = await two_running(start_app, "hang stubborn", 3, 0.5)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await asyncio.sleep(1.5)
    assert zombies_of(os.getpid()) == []
    assert not (job_dir / "running_3").exists()
    tasks = (await status(client, job_id))["job_tasks_status"]
    assert [task["task_state"] for task in tasks] == ["CANCELED"] * 3


async def test_a_cancel_during_the_merge_stops_it(start_app, conn):
    client, _, config = await start_app("slowmerge", slots=2)
    job_id = await submit(client, payload(ntasks=2))
    merges = job_dir_of(config, job_id) / "merges"
    pid = int(await eventually(lambda: asyncio.sleep(0, merges.exists() and merges.read_text())))
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await eventually(lambda: asyncio.sleep(0, not pid_alive(pid)), timeout=5)
    assert (await status(client, job_id))["job_state"] == "CANCELED"
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
    await asyncio.sleep(0.5)
    assert zombies_of(os.getpid()) == []


def before_start(
    monkeypatch: pytest.MonkeyPatch, merge: bool, act: Callable[[str], Awaitable[None]]
) -> list[int]:
    """Run `act(job_id)` just before the runner's first worker process of a task (or of a merge
    step) starts; the pid of that process is added to the list returned once it has started."""
    real, started = process.start, []

    async def start(launch: process.Launch, env: dict[str, str], output: Path):
        first = not started and (launch.line[-1] == "merge") == merge
        if first:
            await act(env["YAPTIDE_SIMULATION_ID"])
        found = await real(launch, env, output)
        if first:
            started.append(found.pid)
        return found

    monkeypatch.setattr(process, "start", start)
    return started


async def test_a_cancel_while_a_worker_is_being_started_stops_it(start_app, conn, monkeypatch):
    """A cancel answered while the runner starts a task's worker (its files written, the
    process being made) finds no process to stop yet: the worker started after it must be
    stopped as soon as it runs, or a worker that reports late (never, here) runs on."""
    client, _, _ = await start_app("quiet", slots=1)
    answers = []

    async def cancel(job_id: str) -> None:
        response = await client.delete("/jobs/direct", params={"job_id": job_id})
        answers.append((response.status, await response.json()))

    started = before_start(monkeypatch, False, cancel)
    job_id = await submit(client, payload(ntasks=1))
    await eventually(lambda: asyncio.sleep(0, started))
    assert answers == [(200, {"message": "Job cancelled"})]
    await wait_gone(started)
    body = await status(client, job_id)
    assert (body["job_state"], body["job_tasks_status"][0]["task_state"]) == (
        "CANCELED",
        "CANCELED",
    )
    assert await logfiles_of(conn) == {}


async def test_a_cancel_by_another_server_as_the_merge_starts_stops_it(
    aiohttp_client, make_config, start_app, conn, monkeypatch
):
    """A cancel answered by another server after the last task ended, before the merge step's
    process started: this runner had forgotten the job's tasks and did not know of its merge
    yet, so the change listener's news reached nobody, and the merge ran on (30 s here) to
    its end. The merge step, once started, asks after its job."""
    client, _, _ = await start_app("slowmerge", slots=2)
    other = await other_server(aiohttp_client, make_config)
    answers = []

    async def cancel(job_id: str) -> None:
        response = await other.delete("/jobs/direct", params={"job_id": job_id})
        answers.append((response.status, await response.json()))
        await asyncio.sleep(0.2)  # its news reaches the runner, which has no process to stop

    started = before_start(monkeypatch, True, cancel)
    job_id = await submit(client, payload(ntasks=2))
    await eventually(lambda: asyncio.sleep(0, started), timeout=30)
    assert answers == [(200, {"message": "Job cancelled"})]
    await wait_gone(started)
    body = await status(client, job_id)
    assert body["job_state"] == "CANCELED"
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED"] * 2
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
    assert await logfiles_of(conn) == {}


def zombies_of(pid: int) -> list[int]:
    """The children of `pid` that have ended and were never waited for."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
