"""End to end through the local runner: real worker processes (tests/fakes/worker.py) talking to
the server over TCP with their update key, exactly like workers on HPC nodes."""

import gc
import io
import logging
import os
import stat
import tracemalloc
from pathlib import Path

import orjson
import pytest

from server.app import create_app
from server.editor import convert
from server.runner import Job
from tests.helpers import (
    FAKE_WORKER,
    FIXTURES,
    RESULTS_FIXTURE,
    eventually,
    job_dir_of,
    logfiles_of,
    login,
    payload,
    pids_of,
    read_json,
    states_are,
    status,
    submit,
    wait_gone,
)

SERVER_SECRETS = (
    "DATABASE_URL",
    "YAPTIDE_DATABASE_URL",
    "YAPTIDE_AUTH_SECRET",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICEFILE",
    "SSH_AUTH_SOCK",
)
FILES = sorted(read_json(FIXTURES / "shieldhit_json_payload_files.json")["input_files"])


async def test_submit_run_complete(start_app, conn, monkeypatch):
    for secret in SERVER_SECRETS:  # the server's own: no worker gets them
        monkeypatch.setenv(secret, "postgresql://u:secret@db/x")
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
            "YAPTIDE_INPUT_TYPE": "files",
            "YAPTIDE_SIMULATORS_SHIELDHIT": "shieldhit",
            "YAPTIDE_SIMULATORS_FLUKA": "rfluka",
            "YAPTIDE_RUNNER_CONVERTER": "",
            "YAPTIDE_RUNNER_PROGRESS_INTERVAL": "2.0",
            "YAPTIDE_RUNNER_RETRY_TIMEOUT": "600.0",
            "YAPTIDE_PARENT_PID": str(os.getpid()),  # the server: this test's process
        }
        assert seen["key_length"] == len(key) == 43
        assert set(SERVER_SECRETS).isdisjoint(seen["names"]) and "PATH" in seen["names"]
        assert seen["argv"] == [str(FAKE_WORKER), "complete", str(RESULTS_FIXTURE)]
        assert (seen["cwd"], seen["files"]) == (str(job_dir / f"task_{task_id}"), FILES)
        # The key is in the environment only, never on a command line.
        cmdline = Path(f"/proc/{int((job_dir / f'pid_{task_id}').read_text())}/cmdline")
        assert key.encode() not in cmdline.read_bytes()

    # One user's inputs, results and logs: no other account of the host may read them.
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
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
    # The merge step (the worker command plus "merge") posts results: the job COMPLETES.
    body = await eventually(states_are(client, job_id, "COMPLETED"))
    assert [task["task_state"] for task in body["job_tasks_status"]] == [
        "COMPLETED",
        "FAILED",
        "COMPLETED",
    ]
    assert len((job_dir_of(config, job_id) / "merges").read_text().split()) == 1
    assert sum("merge step started" in message for message in caplog.messages) == 1
    response = await client.get("/estimators", params={"job_id": job_id})
    assert [estimator["name"] for estimator in (await response.json())["estimators"]] == ["merged"]


async def test_merge_step_ending_without_results(start_app, conn):
    client, _, _ = await start_app("crashmerge")
    job_id = await submit(client, payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "COMPLETED"))
    assert await logfiles_of(conn) == {
        "merge": "The merge step exited with code 4 without posting results.\n\n"
        "Last output:\nmerging {broken}\n"
    }
    assert await conn.fetchval("SELECT end_time IS NOT NULL FROM simulations")


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


async def test_editor_input_written_as_converted_files(start_app, conn):
    client, _, config = await start_app("crash")
    body = payload("json_payload_editor.json", ntasks=1)
    job_id = await submit(client, body)
    await eventually(states_are(client, job_id, "FAILED"))
    task_dir = job_dir_of(config, job_id) / "task_1"
    files = convert(body["input_json"], 10000)
    assert read_json(job_dir_of(config, job_id) / "env_1.json")["files"] == sorted(files)
    assert {name: (task_dir / name).read_text() for name in files} == files


async def test_editor_input_written_as_input_json_for_an_operator_converter(start_app, conn):
    client, _, config = await start_app("crash", converter="site-convert input.json .")
    body = payload("json_payload_editor.json", ntasks=1)
    job_id = await submit(client, body)
    await eventually(states_are(client, job_id, "FAILED"))
    task_dir = job_dir_of(config, job_id) / "task_1"
    assert read_json(job_dir_of(config, job_id) / "env_1.json")["files"] == ["input.json"]
    assert read_json(task_dir / "input.json") == body["input_json"]


@pytest.mark.parametrize("sandbox", ["off", "on"])
async def test_command_that_cannot_start(aiohttp_client, make_config, conn, sandbox, request):
    """The same log in the runner's sandbox, whose bwrap would start and then fail."""
    if sandbox == "on":
        request.getfixturevalue("bwrap")
    command = "/nonexistent/worker --flag"
    config = make_config(runner={"kind": "local", "command": command, "sandbox": sandbox})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert await logfiles_of(conn) == {
        "task_1_output": "The worker command '/nonexistent/worker' could not start: "
        "No such file or directory"
    }


async def test_a_work_dir_that_cannot_be_made_is_named_in_the_tasks_log(
    aiohttp_client, make_config, conn, tmp_path
):
    """The task's log blames runner.work_dir, not the worker command; nothing logs a traceback."""
    (tmp_path / "a-file").write_text("not a directory")
    work_dir = tmp_path / "a-file" / "jobs"
    config = make_config(runner={"kind": "local", "work_dir": str(work_dir)})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    (log,) = (await logfiles_of(conn)).values()  # the path it could not make, under work_dir
    assert log.startswith(f"The task's files could not be written in runner.work_dir: {work_dir}")
    assert log.endswith(": Not a directory"), log


async def test_slots_are_respected(start_app, conn, tmp_path):
    work_dir = tmp_path / "work"
    client, _, _ = await start_app("slots", slots=2, work_dir=str(work_dir))
    job_id = await submit(client, payload(ntasks=5))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
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
    await eventually(states_are(client, second, "COMPLETED"))
    await eventually(states_are(client, first, "COMPLETED"))
    assert order.read_text().splitlines() == [f"{first} 1", f"{first} 2", f"{second} 1"]


async def test_queued_simulations_do_not_keep_their_input_in_memory(
    aiohttp_client, make_config, conn, tmp_path
):
    """A queued simulation's input is read from the database when its first task starts: the
    runner's queue does not hold every submission's input (up to 60 MiB each) until a slot
    frees."""
    work_dir = tmp_path / "work"
    config = make_config(
        runner={
            "kind": "local",
            "command": "sleep 1000",
            "slots": 1,
            "grace_period": 0.5,
            "work_dir": str(work_dir),
        }
    )
    client = await aiohttp_client(create_app(config))
    await login(client)
    line = "* an ordinary comment line of an input file, nothing but text\n"
    files = {"beam.dat": "NSTAT 100\n", "big.dat": line * (8 * 2**20 // len(line))}
    first = await _submit_large(client, payload(input_files=files, ntasks=1))
    await eventually(lambda: _exists(work_dir / first / "task_1" / "big.dat"))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(4):  # queued behind the first, which never ends
            await _submit_large(client, payload(input_files=files, ntasks=1))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 4 * 2**20, f"{kept / 2**20:.1f} MiB kept for 4 queued simulations"
    assert (work_dir / first / "task_1" / "big.dat").read_text() == files["big.dat"]


async def test_queued_tasks_are_not_kept_one_by_one_in_memory(aiohttp_client, make_config, conn):
    """The queue held one entry per task (~105 bytes each): a user's quota (10 GiB, 128 bytes
    a task) let ~80 million queued tasks hold ~8 GiB of the server's memory, and each cancel
    rebuilt the whole queue on the event loop. A queued job is now one entry, whatever its
    ntasks; the order is unchanged (test_fifo_across_jobs)."""
    config = make_config(runner={"kind": "local", "command": "sleep 1000", "slots": 1})
    client = await aiohttp_client(create_app(config))
    await login(client)
    await submit(client, payload(ntasks=1))  # runs, and never ends
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(20):
            await submit(client, payload(ntasks=1000))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    runner = [tracemalloc.Filter(True, "*/server/runner/local*.py")]
    stats = after.filter_traces(runner).compare_to(before.filter_traces(runner), "filename")
    kept = sum(stat.size_diff for stat in stats)
    assert kept < 64 << 10, f"20 queued jobs of 1000 tasks: {kept / 2**20:.2f} MiB in the queue"


async def _submit_large(client, body: dict) -> str:
    data = io.BytesIO(orjson.dumps(body))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=data, headers=headers)
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def _exists(path: Path) -> bool:
    return path.exists()


def test_a_jobs_repr_shows_no_update_key() -> None:
    """A job in a log line or a traceback's locals must not carry its key in clear."""
    job = Job("job", "shieldhit", "files", 1, (100,), "k" * 43, {})
    assert "k" * 43 not in repr(job) and "job" in repr(job)
