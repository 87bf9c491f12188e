"""End to end through the local runner: real worker processes (tests/fake_worker.py) talking to
the server over TCP with their update key, exactly like workers on HPC nodes."""

import logging
import shlex
import sys
from pathlib import Path

import pytest

from server.app import create_app
from tests.conftest import FIXTURES, login
from tests.jobs_support import (
    RESULTS_FIXTURE,
    eventually,
    payload,
    pid_alive,
    read_json,
    record_jobs,
    status,
    submit,
)

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
FILES = sorted(read_json(FIXTURES / "shieldhit_json_payload_files.json")["input_files"])


@pytest.fixture
def start_app(aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn):
    """Start an app on a real port whose local runner runs `fake_worker.py <mode>`."""

    async def start(mode: str, user: str = "alice", **runner):
        port = unused_tcp_port_factory()
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_WORKER))} {mode}"
        config = make_config(
            server={"public_url": f"http://127.0.0.1:{port}"},
            runner={"kind": "local", "command": command, "grace_period": 0.5, **runner},
        )
        app = create_app(config)
        recorder = record_jobs(app)
        client = await aiohttp_client(await aiohttp_server(app, port=port))
        await login(client, user)
        return client, recorder, config

    return start


def job_dir_of(config, job_id: str) -> Path:
    return config.data_dir / "jobs" / job_id


def states_are(client, job_id: str, job_state: str, task_state: str | None = None):
    """A check for `eventually`: the status body once the job (and every task) is in a state."""

    async def check():
        body = await status(client, job_id)
        tasks_ok = task_state is None or all(
            task["task_state"] == task_state for task in body["job_tasks_status"]
        )
        return body if body["job_state"] == job_state and tasks_ok else None

    return check


async def logfiles_of(conn) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, content FROM logfiles ORDER BY name")
    return {row["name"]: row["content"] for row in rows}


async def wait_gone(pids: list[int]) -> None:
    async def gone():
        return not any(pid_alive(pid) for pid in pids)

    await eventually(gone, timeout=10)


def pids_of(job_dir: Path, tasks: range) -> list[int]:
    return [int((job_dir / f"pid_{n}").read_text()) for n in tasks]


async def test_submit_run_complete(start_app, conn):
    client, recorder, config = await start_app(f"complete {RESULTS_FIXTURE}")
    job_id = await submit(client, payload(ntasks=2))
    job_dir = job_dir_of(config, job_id)

    async def progressing():
        body = await status(client, job_id)
        tasks = body["job_tasks_status"]
        return body if all(task["simulated_primaries"] == 2500 for task in tasks) else None

    body = await eventually(progressing)
    assert body["job_state"] == "RUNNING"
    for task in body["job_tasks_status"]:
        assert task["task_state"] == "RUNNING" and task["start_time"] and not task["end_time"]
        assert (task["requested_primaries"], task["estimated_time"]) == (5000, 7)

    key = recorder.key(job_id)
    for task_id in (1, 2):
        seen = read_json(job_dir / f"env_{task_id}.json")
        assert seen["env"] == {
            "YAPTIDE_URL": config.server.public_url,
            "YAPTIDE_SIMULATION_ID": job_id,
            "YAPTIDE_TASK_ID": str(task_id),
            "YAPTIDE_NTASKS": "2",
            "YAPTIDE_SIM_TYPE": "shieldhit",
            "YAPTIDE_PRIMARIES": "5000",
            "YAPTIDE_JOB_DIR": str(job_dir),
        }
        assert seen["key_length"] == len(key) == 43
        assert seen["argv"] == [str(FAKE_WORKER), "complete", str(RESULTS_FIXTURE)]
        assert (seen["cwd"], seen["files"]) == (str(job_dir / f"task_{task_id}"), FILES)
        # The key is in the environment only, never on a command line.
        cmdline = Path(f"/proc/{int((job_dir / f'pid_{task_id}').read_text())}/cmdline")
        assert key.encode() not in cmdline.read_bytes()

    (job_dir / "go").touch()
    body = await eventually(states_are(client, job_id, "COMPLETED"))
    for task in body["job_tasks_status"]:
        assert (task["task_state"], task["simulated_primaries"]) == ("COMPLETED", 5000)
        assert task["start_time"] <= task["end_time"]
    assert await conn.fetchval("SELECT end_time IS NOT NULL FROM simulations")
    response = await client.get("/estimators", params={"job_id": job_id})
    names = [estimator["name"] for estimator in (await response.json())["estimators"]]
    assert names == ["yz_profile_", "entrance_", "z_profile_", "peak_"]
    assert await conn.fetchval("SELECT count(*) FROM pages") == 21
    await wait_gone(pids_of(job_dir, range(1, 3)))
    assert await logfiles_of(conn) == {}


async def test_one_task_fails_and_merge_hook(start_app, conn, caplog):
    caplog.set_level(logging.INFO, logger="server.runner.local")
    client, _, config = await start_app("fail 2", slots=3)
    job_id = await submit(client, payload(ntasks=3))
    await eventually(states_are(client, job_id, "RUNNING", "RUNNING"))
    (job_dir_of(config, job_id) / "go").touch()
    body = await eventually(states_are(client, job_id, "MERGING_QUEUED"))
    assert [task["task_state"] for task in body["job_tasks_status"]] == [
        "COMPLETED",
        "FAILED",
        "COMPLETED",
    ]

    async def merge_called():
        return f"job {job_id} is waiting for a merge step" in caplog.messages

    await eventually(merge_called)
    assert caplog.messages.count(f"job {job_id} is waiting for a merge step") == 1


async def test_all_tasks_fail(start_app, conn):
    client, _, config = await start_app("fail all")
    job_id = await submit(client, payload(ntasks=2))
    job_dir_of(config, job_id).mkdir(parents=True, exist_ok=True)
    (job_dir_of(config, job_id) / "go").touch()
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert await conn.fetchval("SELECT end_time IS NOT NULL FROM simulations")
    assert await logfiles_of(conn) == {}  # they reported their failure themselves


async def test_worker_crash(start_app, conn):
    client, _, _ = await start_app("crash")
    job_id = await submit(client, payload("json_payload_editor.json", ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert await logfiles_of(conn) == {
        f"task_{n}_output": (
            "The worker exited with code 3 without reporting a final task state.\n\n"
            f"Last output:\nsimulating task {n}\nSegmentation fault (core dumped)\n"
        )
        for n in (1, 2)
    }
    assert await conn.fetchval("SELECT end_time IS NOT NULL FROM simulations")


async def test_editor_input_written_as_input_json(start_app, conn):
    client, _, config = await start_app("crash")
    body = payload("json_payload_editor.json", ntasks=1)
    job_id = await submit(client, body)
    await eventually(states_are(client, job_id, "FAILED"))
    task_dir = job_dir_of(config, job_id) / "task_1"
    assert read_json(job_dir_of(config, job_id) / "env_1.json")["files"] == ["input.json"]
    assert read_json(task_dir / "input.json") == body["input_json"]


async def test_command_that_cannot_start(aiohttp_client, make_config, conn):
    config = make_config(runner={"kind": "local", "command": "/nonexistent/worker --flag"})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert await logfiles_of(conn) == {
        "task_1_output": "The worker command '/nonexistent/worker' could not start: "
        "[Errno 2] No such file or directory: '/nonexistent/worker'"
    }


async def test_cancel_kills_processes(start_app, conn):
    client, recorder, config = await start_app("hang", slots=2)
    job_id = await submit(client, payload(ntasks=3))
    job_dir = job_dir_of(config, job_id)

    async def both_running():
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(both_running)
    pids = pids_of(job_dir, range(1, 3))
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


async def test_slots_are_respected(start_app, conn, tmp_path):
    work_dir = tmp_path / "work"
    client, _, _ = await start_app("slots", slots=2, work_dir=str(work_dir))
    job_id = await submit(client, payload(ntasks=5))
    await eventually(states_are(client, job_id, "MERGING_QUEUED", "COMPLETED"))
    intervals = [
        tuple(map(float, (work_dir / job_id / f"times_{n}").read_text().split()))
        for n in range(1, 6)
    ]
    starts = sorted(start for start, _ in intervals)
    overlap = max(sum(1 for s, e in intervals if s <= t < e) for t in starts)
    assert overlap == 2


async def test_fifo_across_jobs(start_app, conn, tmp_path):
    order = tmp_path / "order.log"
    client, _, _ = await start_app(f"order {order}", slots=1)
    first = await submit(client, payload(ntasks=2))
    second = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, second, "MERGING_QUEUED"))
    await eventually(states_are(client, first, "MERGING_QUEUED"))
    assert order.read_text().splitlines() == [f"{first} 1", f"{first} 2", f"{second} 1"]


async def test_shutdown_stops_workers(start_app, conn):
    client, _, config = await start_app("hang", slots=2)
    job_id = await submit(client, payload(ntasks=3))
    job_dir = job_dir_of(config, job_id)

    async def both_running():
        return all((job_dir / f"running_{n}").exists() for n in (1, 2))

    await eventually(both_running)
    pids = pids_of(job_dir, range(1, 3))
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
    # A first server (external workers) whose jobs are left in every unfinished state.
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
        "key did not survive, so it cannot be resumed: unfinished tasks ({}) were marked FAILED "
        "when the server started again. Submit the simulation again to rerun it."
    )
    logs = await conn.fetch(
        "SELECT s.job_id, l.name, l.content FROM logfiles l JOIN simulations s ON s.id = l.simulation_id"
    )
    assert sorted(tuple(row) for row in logs) == sorted(
        [
            (running, "runner", explain.format("1, 2")),
            (merging, "runner", explain.format("none")),
            (pending, "runner", explain.format("1, 2")),
        ]
    )
    body = {"simulation_id": running, "update_key": recorder.key(running), "task_id": 1}
    response = await client.post("/tasks", json={**body, "update_dict": {"task_state": "FAILED"}})
    assert response.status == 409
