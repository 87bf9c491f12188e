"""The built-in worker as an HPC node or an external worker machine runs it, as README "Running
the worker elsewhere" and "Runner and worker" describe: `python -P -m server.worker` started by
hand in a directory outside the checkout, with only the documented environment, against a real
server (real HTTP, real PostgreSQL); and the local runner's own command, with a user's input file
named like a module."""

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path

from server.config import PROJECT_DIR
from tests.fakes.simulators import averaging_payload, write_fake
from tests.helpers import eventually, job_dir_of, start_worker_app
from tests.test_worker import MINIMAL

INPUTS = ("beam.dat", "geo.dat", "mat.dat", "detect.dat")


def node_env(client, identity: dict[str, str], job_dir: Path, **more: str) -> dict[str, str]:
    """Only the documented variables (README's table), as a batch job sets them."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_DIR),  # the package, as installed on the node
        "YAPTIDE_URL": str(client.make_url("")).rstrip("/"),
        "YAPTIDE_SIMULATION_ID": identity["simulation_id"],
        "YAPTIDE_UPDATE_KEY": identity["update_key"],
        "YAPTIDE_NTASKS": "4",
        "YAPTIDE_SIM_TYPE": "shieldhit",
        "YAPTIDE_INPUT_TYPE": "files",
        "YAPTIDE_JOB_DIR": str(job_dir),
        **more,
    }


async def run_worker(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """`python -P -m server.worker [args]` in `cwd`, without blocking the in-process server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-m",
        "server.worker",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def test_a_merge_that_gave_up_waiting_for_the_tasks_does_not_exit_0(worker, conn, tmp_path):
    """README: exit status 0 "done (or the job had ended)". A merge step started before the
    tasks ended (an external dispatcher's mistake, or SLURM's merge job with the reconciler
    lagging past retry_timeout) gave up with the job still PENDING, yet exited 0 logging
    "stopping: the job has ended": the dispatcher took the merge as done."""
    client, _, identity = worker
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    env = node_env(client, identity, job_dir, YAPTIDE_RUNNER_RETRY_TIMEOUT="2")
    status, output = await run_worker(env, tmp_path, "merge")
    assert await conn.fetchval("SELECT job_state FROM simulations") == "PENDING"
    assert status == 1, output
    assert "the job has ended" not in output, output


async def test_the_merge_step_asks_again_for_the_whole_retry_timeout(worker, conn, tmp_path):
    """README: told the job is not ready to merge yet, the merge step "asks again for as long"
    (YAPTIDE_RUNNER_RETRY_TIMEOUT). It gives up as soon as its next backoff would pass the
    deadline: it did after 3.75 s of 6 s here (after ~570 s of the default 600 s)."""
    client, _, identity = worker
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    env = node_env(client, identity, job_dir, YAPTIDE_RUNNER_RETRY_TIMEOUT="6")
    _, output = await run_worker(env, tmp_path, "merge")
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in output.splitlines()
        if line[:4].isdigit()
    ]
    assert (stamps[-1] - stamps[0]).total_seconds() >= 5.9, output


SHADOW = """from pathlib import Path
Path({marker!r}).write_text("an input file ran as code in the worker")
raise SystemExit(7)
"""


async def test_the_local_runner_does_not_run_a_users_input_file_as_code(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn, tmp_path
):
    """The local runner (the default) runs the worker in the task directory, which holds the
    user's input files: a file `orjson.py` in a submission ran on the server's host as the
    server's user (its data directory, signing secret, database)."""
    shieldhit = write_fake(tmp_path / "shieldhit", "shieldhit", {"*": MINIMAL})
    port = unused_tcp_port_factory()
    client, _, config = await start_worker_app(
        aiohttp_server, aiohttp_client, port, make_config, {"shieldhit": str(shieldhit)}
    )
    marker = tmp_path / "ran-on-the-server"
    body = averaging_payload(ntasks=1)
    body["input_files"]["orjson.py"] = SHADOW.format(marker=str(marker))
    response = await client.post("/jobs/direct", json=body)
    if response.status == 400:  # refused at submission: as safe
        return
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]

    async def ended() -> str | None:
        answer = await client.get("/jobs/direct", params={"job_id": job_id})
        state = (await answer.json())["job_state"]
        return state if state in ("COMPLETED", "FAILED", "CANCELED") else None

    state = await eventually(ended, timeout=60)
    assert not marker.exists(), (job_dir_of(config, job_id) / "task_1.log").read_text()
    assert state == "COMPLETED"
