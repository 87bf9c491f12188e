"""The local runner's lifecycle: cancel (SIGTERM, then SIGKILL), shutdown, and a restart after a
server died with unfinished simulations."""

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.keys import CONFIG
from server.results.caches import changes
from server.results.caches.changes import APP_NAME
from server.runner import RunnerBusy
from server.runner.local.lock import LOCK_KEY
from tests.helpers import (
    eventually,
    job_dir_of,
    logfiles_of,
    login,
    payload,
    pid_alive,
    pids_of,
    processes_of,
    record_jobs,
    states_are,
    status,
    submit,
    wait_gone,
)


async def two_of_three_running(start_app) -> tuple:
    """A 3-task job of hanging workers with slots=2: (client, recorder, job_id, job directory,
    pids of tasks 1 and 2) once both are running."""
    client, recorder, config = await start_app("hang", slots=2)
    job_id = await submit(client, payload(ntasks=3))
    job_dir = job_dir_of(config, job_id)

    async def both_running():
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(both_running)
    return client, recorder, job_id, job_dir, pids_of(job_dir, range(1, 3))


async def test_cancel_kills_processes(start_app, conn):
    client, recorder, job_id, job_dir, pids = await two_of_three_running(start_app)
    assert all(pid_alive(pid) for pid in pids)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    await wait_gone(pids)
    body = await status(client, job_id)
    assert body["job_state"] == "CANCELED"
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["CANCELED"] * 3
    assert not (job_dir / "env_3.json").exists()  # the queued task was dropped, never started
    update = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "FAILED"}}
    response = await client.post("/tasks", json={**update, "update_key": recorder.key(job_id)})
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is CANCELED: no more updates are accepted"},
    )
    assert await logfiles_of(conn) == {}


async def test_a_cancel_answered_by_another_server_reaches_the_runner(
    aiohttp_client, make_config, start_app, conn
):
    """A server with `runner.kind = "none"` on the same database answers the owner's cancel:
    the local runner's processes ran on to their end and its queued task still started (the
    cancel reached only the answering server's dispatcher)."""
    _, _, job_id, job_dir, pids = await two_of_three_running(start_app)
    other = await aiohttp_client(create_app(make_config()))
    credentials = {"username": "alice", "password": "password1"}
    assert (await other.post("/auth/login", json=credentials)).status == 202
    response = await other.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    await wait_gone(pids)
    await asyncio.sleep(0.5)  # a slot freed: the queued task would start now
    assert not (job_dir / "env_3.json").exists()


async def other_server(aiohttp_client, make_config) -> TestClient:
    """A server with `runner.kind = "none"` on the same database, alice logged in."""
    other = await aiohttp_client(create_app(make_config()))
    credentials = {"username": "alice", "password": "password1"}
    assert (await other.post("/auth/login", json=credentials)).status == 202
    return other


async def cut_listeners(conn) -> None:
    """End every change listener's connection (as under load: a ping answered late); each
    listens again after server.results.caches.changes.RECONNECT_AFTER."""
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        APP_NAME,
    )


async def test_a_cancel_made_while_the_runner_was_not_listening_reaches_it(
    aiohttp_client, make_config, start_app, conn
):
    """The runner's change listener lost its connection and another server answered a cancel
    meanwhile: the notification never reached the runner, whose processes ran to their end.
    Listening again, it asks after every job it runs."""
    _, _, job_id, job_dir, pids = await two_of_three_running(start_app)
    other = await other_server(aiohttp_client, make_config)
    await cut_listeners(conn)
    assert (await other.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    await wait_gone(pids)
    await asyncio.sleep(0.5)  # a slot freed: the queued task would start now
    assert not (job_dir / "env_3.json").exists()


async def test_a_simulation_cancelled_and_deleted_by_another_server_is_stopped(
    aiohttp_client, make_config, start_app, conn
):
    """Cancelled and deleted through another server before the runner asked after it (here:
    while it was not listening): it found no simulation, not a CANCELED one, and let its
    processes run to their end; its queued task started in the freed slot."""
    _, _, job_id, job_dir, pids = await two_of_three_running(start_app)
    other = await other_server(aiohttp_client, make_config)
    await cut_listeners(conn)
    assert (await other.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    assert (await other.delete("/user/simulations", params={"job_id": job_id})).status == 200
    await wait_gone(pids)
    await eventually(lambda: asyncio.to_thread(lambda: not job_dir.exists()))
    assert processes_of(job_id) == []  # the queued task never started


async def listeners_are(conn, count: int) -> bool:
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    return await conn.fetchval(sessions, APP_NAME) == count


async def test_a_queued_job_cancelled_by_another_server_unheard_never_starts(
    aiohttp_client, make_config, start_app, conn, monkeypatch
):
    """A queued job cancelled through another server while the runner does not listen (here
    its listener stays away): when a slot frees, the task's start asks after its job, finds
    it ended, and starts the next job's instead. Before, the cancelled job's worker started."""
    monkeypatch.setattr(changes, "RECONNECT_AFTER", 60.0)  # a listener cut stays away
    client, _, config = await start_app("fail all", slots=1)
    running, cancelled, last = [await submit(client, payload(ntasks=1)) for _ in range(3)]
    await eventually(states_are(client, running, "RUNNING"), timeout=30)
    other = await other_server(aiohttp_client, make_config)
    await eventually(lambda: listeners_are(conn, 2))
    await cut_listeners(conn)
    await eventually(lambda: listeners_are(conn, 0))
    response = await other.delete("/jobs/direct", params={"job_id": cancelled})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    (job_dir_of(config, running) / "go").touch()  # the slot frees: the queued tasks start
    await eventually(states_are(client, last, "RUNNING"), timeout=30)
    assert not job_dir_of(config, cancelled).exists()  # no file written, no worker started
    body = await status(client, cancelled)
    assert (body["job_state"], body["job_tasks_status"][0]["task_state"]) == (
        "CANCELED",
        "CANCELED",
    )
    assert await logfiles_of(conn) == {}


async def test_cancel_kills_a_worker_ignoring_sigterm(start_app, conn):
    client, _, config = await start_app("hang stubborn", grace_period=0.2)
    job_id = await submit(client, payload(ntasks=1))
    job_dir = job_dir_of(config, job_id)

    async def running():
        return (job_dir / "running_1").exists()

    await eventually(running)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await wait_gone(pids_of(job_dir, range(1, 2)))
    assert (await status(client, job_id))["job_state"] == "CANCELED"


async def test_shutdown_stops_workers(start_app, conn):
    client, _, _, _, pids = await two_of_three_running(start_app)
    await client.close()
    assert not any(pid_alive(pid) for pid in pids)
    states = await conn.fetch("SELECT task_state FROM tasks ORDER BY task_id")
    assert [row["task_state"] for row in states] == ["FAILED"] * 3
    assert await conn.fetchval("SELECT job_state FROM simulations") == "FAILED"
    stopped = (
        "The server shut down and stopped this task: its worker was killed by SIGTERM "
        "without reporting a final task state.\n\nLast output:\n"
    )
    assert await logfiles_of(conn) == {
        "runner": "The server shut down before this simulation finished: unfinished tasks (3) "
        "were marked FAILED. Submit the simulation again to rerun it.",
        "task_1_output": stopped,
        "task_2_output": stopped,
    }


async def test_restart_fails_what_a_dead_server_left(aiohttp_client, make_config, start_app, conn):
    # A first server whose jobs are left in every unfinished state: its reports made here as
    # its local runner's workers would have made them (the jobs marked as that runner's below).
    app = create_app(make_config())
    recorder = record_jobs(app)
    first = await aiohttp_client(app)
    await login(first)

    async def update(job_id: str, task_id: int, state: str) -> None:
        body = {"simulation_id": job_id, "update_key": recorder.key(job_id), "task_id": task_id}
        response = await first.post("/tasks", json={**body, "update_dict": {"task_state": state}})
        assert response.status == 202

    running, merging, pending, done = [await submit(first, payload(ntasks=2)) for _ in range(4)]
    await update(running, 1, "RUNNING")
    for job_id in (merging, done):
        for task_id in (1, 2):
            await update(job_id, task_id, "RUNNING")
            await update(job_id, task_id, "COMPLETED" if job_id == merging else "FAILED")
    await first.close()
    await conn.execute("UPDATE simulations SET local_runner = true")

    # The next server, in local mode, cannot finish any of them: their keys died with the first.
    client, _, _ = await start_app("complete", user="bob")
    rows = await conn.fetch(
        "SELECT s.job_id, s.job_state, s.end_time IS NOT NULL AS ended,"
        " array_agg(t.task_state ORDER BY t.task_id) AS tasks"
        " FROM simulations s JOIN tasks t ON t.simulation_id = s.id GROUP BY s.id"
    )
    assert {row["job_id"]: tuple(row)[1:] for row in rows} == {
        running: ("FAILED", True, ["FAILED", "FAILED"]),
        merging: ("FAILED", True, ["COMPLETED", "COMPLETED"]),
        pending: ("FAILED", True, ["FAILED", "FAILED"]),
        done: ("FAILED", True, ["FAILED", "FAILED"]),
    }
    explain = (
        "The server stopped before this simulation finished. Its worker processes and its update "
        "key did not survive, so it cannot be resumed: {} when the server started again. Submit "
        "the simulation again to rerun it."
    )
    tasks = "unfinished tasks (1, 2) were marked FAILED"
    merge = "its tasks had ended, but their results were not merged: it was marked FAILED"
    logs = await conn.fetch(
        "SELECT s.job_id, l.name, l.content FROM logfiles l JOIN simulations s ON s.id = l.simulation_id"
    )
    assert sorted(tuple(row) for row in logs) == sorted(
        [
            (running, "runner", explain.format(tasks)),
            (merging, "runner", explain.format(merge)),
            (pending, "runner", explain.format(tasks)),
        ]
    )
    body = {"simulation_id": running, "update_key": recorder.key(running), "task_id": 1}
    response = await client.post("/tasks", json={**body, "update_dict": {"task_state": "FAILED"}})
    assert response.status == 409


async def test_a_local_runner_starting_leaves_external_workers_their_simulations(
    aiohttp_client, make_config, start_app, conn
):
    """A server with `runner.kind = "none"` submits for external workers, whose keys outlive
    any server: a local runner starting on the same database (another server, or this one
    restarted in local mode) failed them too, and the workers' next reports were 409."""
    app = create_app(make_config())
    recorder = record_jobs(app)
    first = await aiohttp_client(app)
    await login(first)
    job_id = await submit(first, payload(ntasks=2))
    body = {"simulation_id": job_id, "update_key": recorder.key(job_id), "task_id": 1}
    running = {**body, "update_dict": {"task_state": "RUNNING"}}
    assert (await first.post("/tasks", json=running)).status == 202
    await start_app("complete", user="bob")
    completed = {**body, "update_dict": {"task_state": "COMPLETED"}}
    assert (await first.post("/tasks", json=completed)).status == 202
    states = await conn.fetch("SELECT task_state FROM tasks ORDER BY task_id")
    assert [row["task_state"] for row in states] == ["COMPLETED", "PENDING"]
    assert await conn.fetchval("SELECT job_state FROM simulations") == "RUNNING"
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_of_simulations_stored_before_their_runner_was_recorded_only_its_own_fail(
    aiohttp_client, make_config, start_app, conn, caplog
):
    """Migration 0019 took the simulations stored before it for the local runner's: one
    submitted for external workers was failed by the next local runner to start. Their runner is
    not known (NULL since 0021); the local runner fails those it had started (a job directory)."""
    app = create_app(make_config())
    recorder = record_jobs(app)
    first = await aiohttp_client(app)
    await login(first)
    started, external = [await submit(first, payload(ntasks=1)) for _ in range(2)]
    await conn.execute("UPDATE simulations SET local_runner = NULL")
    job_dir_of(make_config(), started).mkdir(parents=True)
    await start_app("complete", user="bob")
    rows = await conn.fetch("SELECT job_id, job_state FROM simulations")
    assert dict(tuple(row) for row in rows) == {started: "FAILED", external: "PENDING"}
    logs = await conn.fetch(
        "SELECT s.job_id, l.name FROM logfiles l JOIN simulations s ON s.id = l.simulation_id"
    )
    assert [tuple(row) for row in logs] == [(started, "runner")]
    assert (
        "left 1 unfinished direct simulations stored before migration 0019 to external workers "
        f"(not started here: no job directory; a user can cancel one): {external}"
    ) in caplog.messages
    body = {"simulation_id": external, "update_key": recorder.key(external), "task_id": 1}
    completed = {**body, "update_dict": {"task_state": "COMPLETED"}}
    assert (await first.post("/tasks", json=completed)).status == 202


async def running_job(start_app) -> tuple[TestClient, str, Path]:
    """A server whose local runner runs one task that never ends: (client, job_id, job_dir)."""
    client, _, config = await start_app("hang")
    job_id = await submit(client, payload(ntasks=1))
    job_dir = job_dir_of(config, job_id)

    async def running():
        return (job_dir / "running_1").exists()

    await eventually(running)
    return client, job_id, job_dir


async def second_server_refused(config) -> bool:
    """Whether a second server on the same database stops at its startup (as run.py runs it,
    before binding) with RunnerBusy."""
    second = create_app(config)
    try:
        await web.AppRunner(second).setup()
        return False
    except RunnerBusy:
        return True
    finally:
        await second.cleanup()


async def test_a_second_server_on_the_database_leaves_the_first_ones_jobs_alone(start_app):
    """`run.py` started again on the same data directory (its port taken, or another one): the
    second server must not take the first one's running simulation for a dead server's."""
    client, job_id, job_dir = await running_job(start_app)
    assert await second_server_refused(client.server.app[CONFIG])
    body = await status(client, job_id)
    assert (body["job_state"], body["job_tasks_status"][0]["task_state"]) == ("RUNNING", "RUNNING")
    assert pid_alive(pids_of(job_dir, range(1, 2))[0])


async def test_the_runner_lock_outlives_a_lost_connection(start_app, conn):
    """The local runner's lock lives on a connection of its own: once that session ends
    (PostgreSQL restarted, an idle connection cut), the lock must be taken again, or a second
    server started later takes the first one's running simulation for a dead server's."""
    client, job_id, _ = await running_job(start_app)
    ended = (
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
    )
    assert await conn.fetchval(ended, LOCK_KEY)
    await asyncio.sleep(0.5)
    assert await second_server_refused(client.server.app[CONFIG])
    body = await status(client, job_id)
    assert (body["job_state"], body["job_tasks_status"][0]["task_state"]) == ("RUNNING", "RUNNING")
