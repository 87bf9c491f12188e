"""runner.kind = "slurm" on a real single-node SLURM: the server host is the login node.

Each simulation is a job array running the built-in worker (which runs a fake SHIELD-HIT12A
replaying a real run) plus a merge job; the reconciler fails what SLURM ends behind the
workers' backs. Timings of the test cluster are printed (pytest -s).
"""

import asyncio
import subprocess
from datetime import timedelta

import pytest

from server.app import create_app
from server.runner.slurm import dispatcher as dispatcher_module
from server.runner.slurm import reconcile as reconcile_module
from server.runner.slurm.reconcile import LOCK_KEY, UNSUBMITTED_TEXT
from server.runner.slurm.state import JobState, Snapshot, add_jobcomp
from tests.fakes.simulators import averaging_payload, fake_shieldhit
from tests.helpers import (
    MESH_MEANS,
    eventually,
    job_dir_of,
    lock_waiters,
    logfiles_of,
    login,
    page_means,
    post,
    results_of,
    running_simulators,
    slurm_ids,
    slurm_states,
    states_are,
    status,
    submit,
    task_and_job_ends,
    wait_gone,
)
from tests.slurm.cluster import Cluster
from tests.test_worker_node import SHADOW


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-5)


async def test_four_tasks_to_completed(
    start_slurm_app, job_root, slurm_cluster: Cluster, conn, caplog
):
    client, recorder, config = await start_slurm_app(fake_shieldhit(job_root, delay=0.05))
    body = averaging_payload(ntasks=4)
    marker = job_root / "ran"  # an input file named like a module must not run as the worker
    body["input_files"]["orjson.py"] = SHADOW.format(marker=str(marker))
    job_id = await submit(client, body)
    key = recorder.key(job_id)
    array_id, _ = await slurm_ids(conn)
    seen_running: list[int] = []
    ps_output = scontrol_output = ""

    async def completed() -> bool:
        nonlocal ps_output, scontrol_output
        body = await status(client, job_id)
        running = [t for t in body["job_tasks_status"] if t["task_state"] == "RUNNING"]
        if running and not seen_running:
            ps_output = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            scontrol_output = slurm_cluster.command("scontrol", "show", "job", "-dd", str(array_id))
        seen_running.extend(t["simulated_primaries"] for t in running)
        return body["job_state"] == "COMPLETED"

    await eventually(completed, timeout=120)
    assert not marker.exists()
    assert any(0 < done < 250 for done in seen_running), seen_running  # progress while running
    body = await status(client, job_id)
    assert [t["task_state"] for t in body["job_tasks_status"]] == ["COMPLETED"] * 4
    assert [t["simulated_primaries"] for t in body["job_tasks_status"]] == [250] * 4
    assert page_means(await results_of(client, job_id)) == {
        key: approx(value) for key, value in MESH_MEANS.items()
    }
    # The update key is in no command line, no SLURM record, no log.
    assert "-m server.worker" in ps_output, ps_output
    assert f"ArrayJobId={array_id}" in scontrol_output
    assert key not in ps_output and key not in scontrol_output
    directory = job_dir_of(config, job_id)
    logs = [*directory.glob("*.log"), *directory.glob("*.sh")]
    logs += [*slurm_cluster.dir.glob("*.log")]
    assert len(logs) >= 7 and not [path for path in logs if key in path.read_text()]
    assert key not in str(await logfiles_of(conn)) and key not in caplog.text

    row = await conn.fetchrow(
        "SELECT extract(epoch FROM min(t.start_time) - s.start_time) AS to_running "
        "FROM simulations s JOIN tasks t ON t.simulation_id = s.id GROUP BY s.id"
    )
    delay, _ = await task_and_job_ends(conn)
    print(
        f"\nSLURM 4-task job: submit -> first task RUNNING {row['to_running']:.2f} s, "
        f"last task end -> COMPLETED {delay:.2f} s"
    )


async def test_cancel(start_slurm_app, job_root, slurm_cluster: Cluster, conn):
    client, recorder, config = await start_slurm_app(fake_shieldhit(job_root, hang=True))
    job_id = await submit(client, averaging_payload(ntasks=4))
    array_id, merge_id = await slurm_ids(conn)
    running = await eventually(running_simulators(job_dir_of(config, job_id)), timeout=60)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    body = await status(client, job_id)
    assert body["job_state"] == "CANCELED"
    assert {t["task_state"] for t in body["job_tasks_status"]} == {"CANCELED"}
    await wait_gone(running)
    states = await eventually(slurm_states(slurm_cluster, array_id, merge_id), timeout=20)
    assert set(states.values()) == {"CANCELLED"}, states
    identity = {"simulation_id": job_id, "update_key": recorder.key(job_id), "task_id": 1}
    late = await post(
        client, "/tasks", {**identity, "update_dict": {"task_state": "COMPLETED"}}, 409
    )
    assert late == {"message": "Simulation is CANCELED: no more updates are accepted"}


async def test_time_limit_fails_the_task(start_slurm_app, job_root, slurm_cluster: Cluster, conn):
    # SLURM counts time limits in whole minutes: 1 is the shortest there is.
    shieldhit = fake_shieldhit(job_root, hang=True)
    client, _, _ = await start_slurm_app(shieldhit, slurm={"time_limit": "1"})
    job_id = await submit(client, averaging_payload(ntasks=1))
    array_id, _ = await slurm_ids(conn)
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=150)
    logs = await logfiles_of(conn)
    assert sorted(logs) == ["task_1_slurm"]
    assert logs["task_1_slurm"].startswith(
        f"SLURM ended array task 1 of job {array_id} as TIMEOUT (TimeLimit) before the worker "
        "reported a final task state.\n\nLast output (task_1.log):\n"
    )
    assert "CANCELLED AT" in logs["task_1_slurm"] and "DUE TO TIME LIMIT" in logs["task_1_slurm"]
    # Once squeue forgets the task (MinJobAge), the jobcomp file still says how it ended.
    history = Snapshot()
    add_jobcomp(history, slurm_cluster.jobcomp.read_text())
    assert history.tasks[array_id, 1] == JobState("TIMEOUT", "exit code 0:0")


async def test_merge_job_cancelled_by_an_admin(
    start_slurm_app, job_root, slurm_cluster: Cluster, conn
):
    client, _, config = await start_slurm_app(fake_shieldhit(job_root, hang=True))
    job_id = await submit(client, averaging_payload(ntasks=2))
    array_id, merge_id = await slurm_ids(conn)
    running = await eventually(running_simulators(job_dir_of(config, job_id)), timeout=60)
    slurm_cluster.command("scancel", str(merge_id))
    body = await eventually(states_are(client, job_id, "FAILED"), timeout=30)
    assert [t["task_state"] for t in body["job_tasks_status"]] == ["FAILED", "FAILED"]
    logs = await logfiles_of(conn)
    assert sorted(logs) == ["merge"]
    # It was still waiting for the array (reason Dependency): it never ran, so no output.
    assert logs["merge"] == (
        f"The merge job {merge_id} ended as CANCELLED (Dependency) without posting results.\n\n"
        "Last output (merge.log):\n"
    )
    # Nothing can finish the job now: the reconciler cancels its array. A task whose worker
    # heard first (409 on its next report) stops its simulator and ends by itself (COMPLETED).
    await wait_gone(running)
    states = await eventually(slurm_states(slurm_cluster, array_id), timeout=20)
    assert set(states.values()) <= {"CANCELLED", "COMPLETED"}, states
    # The reconciler stops watching the job on its next pass after the job ended.
    await eventually(lambda: conn.fetchval("SELECT done FROM slurm_jobs"), timeout=20)


async def test_server_restart_in_the_middle(
    start_slurm_app, job_root, unused_tcp_port_factory, conn
):
    port = unused_tcp_port_factory()
    shieldhit = fake_shieldhit(job_root, delay=0.1)
    client, _, _ = await start_slurm_app(shieldhit, port=port)
    job_id = await submit(client, averaging_payload(ntasks=2))

    async def progressing() -> bool:
        tasks = (await status(client, job_id))["job_tasks_status"]
        return any(task["simulated_primaries"] for task in tasks)

    await eventually(progressing, timeout=60)
    await client.close()  # the server stops; the SLURM jobs keep running and retrying
    await asyncio.sleep(1.0)
    client, _, _ = await start_slurm_app(shieldhit, port=port, new_user=False)
    body = await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=120)
    assert [t["simulated_primaries"] for t in body["job_tasks_status"]] == [500, 500]
    assert page_means(await results_of(client, job_id)) == {
        key: approx(value) for key, value in MESH_MEANS.items()
    }


async def test_sbatch_refuses_the_job(start_slurm_app, job_root, conn):
    shieldhit = fake_shieldhit(job_root)
    client, _, _ = await start_slurm_app(shieldhit, slurm={"partition": "nowhere"})
    job_id = await submit(client, averaging_payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "FAILED"))
    assert (body["job_state"], [t["task_state"] for t in body["job_tasks_status"]]) == (
        "FAILED",
        ["FAILED", "FAILED"],
    )
    response = await client.get("/logfiles", params={"job_id": job_id})
    assert await response.json() == {
        "message": "Logfiles",
        "logfiles": {
            "slurm": "sbatch refused the job:\nsbatch: error: invalid partition specified: "
            "nowhere\nsbatch: error: Batch job submission failed: Invalid partition name specified"
        },
    }
    assert await conn.fetchval("SELECT count(*) FROM slurm_jobs") == 0


RECONCILER_LOCK = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted"


async def test_one_reconciler_per_deployment(start_slurm_app, job_root, conn):
    shieldhit = fake_shieldhit(job_root)
    first, _, _ = await start_slurm_app(shieldhit)
    second, _, _ = await start_slurm_app(shieldhit, new_user=False)

    async def holders() -> list[int]:
        return [row["pid"] for row in await conn.fetch(RECONCILER_LOCK, LOCK_KEY)]

    held = await eventually(holders)  # the first app's reconciler, started first
    await asyncio.sleep(1.0)  # three poll intervals: the second one tried and did not get it
    assert await holders() == held and len(held) == 1
    await first.close()

    async def taken_over() -> list[int] | None:
        found = await holders()
        return found if found and found != held else None

    assert len(await eventually(taken_over, timeout=5)) == 1
    await second.close()
    assert await holders() == []


async def test_simulation_that_never_reached_slurm(
    start_slurm_app, job_root, aiohttp_client, make_config, conn
):
    # The server stopped between storing the simulation and sbatch: here, an app without a
    # dispatcher stored it, and its lease was last renewed ten minutes ago.
    early = await aiohttp_client(create_app(make_config()))
    await login(early)
    job_id = await submit(early, averaging_payload(ntasks=2))
    recent_id = await submit(early, averaging_payload(ntasks=2))
    other_runners = await submit(early, averaging_payload(ntasks=2))  # an external worker's
    lease = "UPDATE simulations SET slurm_lease = now() - $2::interval WHERE job_id = $1"
    await conn.execute(lease, job_id, timedelta(minutes=10))
    await conn.execute(lease, recent_id, timedelta(seconds=1))
    await conn.execute("UPDATE simulations SET start_time = start_time - interval '1 hour'")
    client, _, _ = await start_slurm_app(fake_shieldhit(job_root), new_user=False)
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    response = await client.get("/logfiles", params={"job_id": job_id})
    assert await response.json() == {"message": "Logfiles", "logfiles": {"slurm": UNSUBMITTED_TEXT}}
    # One held a moment ago may still be on its way: it is left alone. Another runner's job
    # has no lease: it was failed as "never reached SLURM" after five minutes.
    assert (await status(client, recent_id))["job_state"] == "PENDING"
    assert (await status(client, other_runners))["job_state"] == "PENDING"


async def test_ids_stored_while_the_reconciler_waits_for_the_row(
    start_slurm_app, job_root, aiohttp_client, make_config, conn
):
    """The reconciler listed the simulations whose lease had run out with no SLURM ids, then
    failed each under its row lock without asking again: one whose ids were stored in between
    (a server whose sbatch was slow, then stored them under the same lock) was failed as
    never sent while its jobs ran in SLURM. Here the test holds the row lock the reconciler
    waits for, and stores the ids meanwhile."""
    early = await aiohttp_client(create_app(make_config()))
    await login(early)
    job_id = await submit(early, averaging_payload(ntasks=1))
    await conn.execute("UPDATE simulations SET slurm_lease = now() - interval '10 minutes'")
    lock_row = "SELECT 1 FROM simulations WHERE job_id = $1 FOR UPDATE"
    async with conn.transaction():
        await conn.execute(lock_row, job_id)
        slurm = {"poll_interval": 3600.0}  # one poll, at the start
        await start_slurm_app(fake_shieldhit(job_root), new_user=None, slurm=slurm)
        await eventually(lambda: lock_waiters(conn))
        await conn.execute(
            "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, merge_job_id)"
            " SELECT id, '', '/nowhere', 999998, 999999 FROM simulations WHERE job_id = $1",
            job_id,
        )
    async with conn.transaction():  # the reconciler's transaction has ended when this returns
        await conn.execute(lock_row, job_id)
    assert "slurm" not in await logfiles_of(conn)  # not failed as never sent (UNSUBMITTED_TEXT)


async def test_held_leases_are_renewed_between_polls_further_apart(
    start_slurm_app, job_root, conn, monkeypatch
):
    """Leases are renewed where polls come at `slurm.poll_interval`: with an interval of five
    minutes or more, a server's own simulations waiting for their turn outlived their leases
    and were failed as never sent. Renewals come every RENEW_EVERY seconds at most (here
    0.3 s, against an hour between polls); the cluster's turns never come."""
    monkeypatch.setattr(reconcile_module, "RENEW_EVERY", 0.3)
    monkeypatch.setattr(dispatcher_module, "SUBMITS_AT_ONCE", 0)
    slurm = {"poll_interval": 3600.0}
    client, _, _ = await start_slurm_app(fake_shieldhit(job_root), slurm=slurm)
    job_id = await submit(client, averaging_payload(ntasks=1))
    await asyncio.sleep(2)
    lease = "SELECT now() - slurm_lease FROM simulations WHERE job_id = $1"
    assert await conn.fetchval(lease, job_id) < timedelta(seconds=1)


async def test_one_copy_of_the_input_for_all_array_tasks(start_slurm_app, job_root, conn):
    """README "Disk": the input is written once per simulation and hard-linked into each task
    directory, "so ntasks does not multiply them", and it counts against the quota once at its
    size in a job directory, "so neither the database nor work_dir grows past the quota". With
    runner.kind = "slurm" each array task copied input/ into task_<n>/ (`cp -R`): a job
    directory held the input 1 + ntasks times, uncompressed, for runner.job_dir_ttl."""
    client, _, config = await start_slurm_app(fake_shieldhit(job_root, delay=0.01))
    body = averaging_payload(ntasks=4)
    body["input_files"]["pad.dat"] = " " * (800 << 10)  # a few KiB once compressed
    job_id = await submit(client, body)
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=120)
    directory = job_dir_of(config, job_id)
    copies = {(p.stat().st_dev, p.stat().st_ino) for p in directory.rglob("pad.dat")}
    assert len(list(directory.rglob("pad.dat"))) == 5  # input/ and the four task directories
    assert len(copies) == 1, f"{len(copies)} copies of the input's 800 KiB"


ALIVE = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED"}


def jobs_named(cluster: Cluster, job_id: str) -> dict[str, str]:
    """{SLURM job: state} of the jobs the server named after a simulation, every state."""
    text = cluster.command("squeue", "-h", "--array", "-t", "all", "-o", "%i|%j|%T")
    found = [line.split("|") for line in text.splitlines()]
    return {job: state for job, name, state in found if name.startswith(f"yaptide-{job_id[:8]}")}


async def test_an_sbatch_that_timed_out_on_a_busy_controller_leaves_no_job_in_slurm(
    start_slurm_app, job_root, slurm_cluster: Cluster, conn
):
    """README: "no job is left in SLURM that the server does not know". sbatch gives up on a
    controller that does not answer within MessageTimeout (10 s) with "Socket timed out on
    send/recv operation", but the controller takes the request once it catches up: the job
    exists. The server failed the simulation ("sbatch refused the job") and knows no id, so
    the array job (here held back by --begin, so it stays PENDING) is left in SLURM."""
    shieldhit = fake_shieldhit(job_root, hang=True)
    client, _, _ = await start_slurm_app(
        shieldhit, slurm={"sbatch_lines": "#SBATCH --begin=now+600"}
    )
    with slurm_cluster.controller_stopped():
        job_id = await submit(client, averaging_payload(ntasks=2))
        # sbatch gives up after MessageTimeout (10 s)
        await eventually(states_are(client, job_id, "FAILED"), timeout=20)
    assert "Socket timed out" in (await logfiles_of(conn))["slurm"]

    async def all_ended() -> dict[str, str] | None:
        states = jobs_named(slurm_cluster, job_id)
        return states if states and not ALIVE & set(states.values()) else None

    await asyncio.sleep(3.0)  # the controller has taken the request by now
    assert jobs_named(slurm_cluster, job_id), "sbatch's request never reached SLURM"
    try:
        states = await eventually(all_ended, timeout=15)
    except AssertionError:
        raise AssertionError(f"left in SLURM: {jobs_named(slurm_cluster, job_id)}") from None
    assert set(states.values()) == {"CANCELLED"}, states
