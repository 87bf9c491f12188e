"""The SLURM path where things meet, on the real test SLURM (and sshd): a task SLURM ends after
its worker listed its results, a delete while sbatch waits for the controller, a cancel while
the login node stalls, and an sbatch that takes the array but refuses the merge job."""

import asyncio

from server.keys import SLURM
from tests.fakes.simulators import averaging_payload, fake_shieldhit
from tests.helpers import (
    eventually,
    job_dir_of,
    logfiles_of,
    post,
    slurm_ids,
    status,
    submit,
)
from tests.slurm.batch import OPTIONS, jobs_named
from tests.slurm.cluster import Cluster
from tests.slurm.sshd import frozen


async def test_a_task_slurm_ended_is_not_merged(
    start_slurm_app, job_root, unused_tcp_port_factory, slurm_cluster: Cluster, conn
):
    """Task 1's worker has listed its result files for the merge, but its COMPLETED waits for
    a server that is restarting (workers retry through restarts); meanwhile SLURM ends array
    task 1 (an administrator's scancel; a time limit or a node failure alike). The reconciler
    fails task 1 and takes its list away first, so the merge job merges task 2 alone. Before,
    it merged both into a COMPLETED job whose task 1 the server showed FAILED."""
    port = unused_tcp_port_factory()
    shieldhit = fake_shieldhit(job_root, delay=0.1)
    client, _, config = await start_slurm_app(shieldhit, port=port)
    job_id = await submit(client, averaging_payload(ntasks=2))
    array_id, _ = await slurm_ids(conn)

    async def both_progressing() -> bool:
        tasks = (await status(client, job_id))["job_tasks_status"]
        return all(task["simulated_primaries"] for task in tasks)

    await eventually(both_progressing, timeout=60)
    await client.close()  # the server stops; the workers keep retrying their reports
    job_dir = job_dir_of(config, job_id)
    lists = [job_dir / f"task_{n}" / ".yaptide_results.json" for n in (1, 2)]
    await eventually(lambda: asyncio.sleep(0, all(path.exists() for path in lists)), timeout=30)
    slurm_cluster.command("scancel", f"{array_id}_1")

    async def task_1_ended() -> bool:
        text = slurm_cluster.command("squeue", "-h", "--array", "-t", "all", "-o", "%i %T")
        return f"{array_id}_1 CANCELLED" in text

    await eventually(task_1_ended, timeout=15)
    client, _, _ = await start_slurm_app(shieldhit, port=port, new_user=False)

    async def ended() -> dict | None:
        body = await status(client, job_id)
        return body if body["job_state"] in ("COMPLETED", "FAILED", "CANCELED") else None

    body = await eventually(ended, timeout=60)
    assert body["job_state"] == "COMPLETED"
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["FAILED", "COMPLETED"]
    assert "task_1_slurm" in await logfiles_of(conn)
    assert "merging the files of 1 tasks" in (job_dir / "merge.log").read_text()


async def test_a_delete_during_the_submission_leaves_no_job_dir_on_the_cluster(
    start_batch_app, job_root, slurm_cluster, held_partition, conn
):
    """A simulation cancelled and deleted while its sbatch waits for a busy controller (its
    files uploaded): the delete found no SLURM ids to remove a directory by. The submission,
    once sbatch answers, cancels the jobs and now removes the directory too. Before, it stayed
    on the cluster (the user's input) until the hourly sweep."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    remote = job_root / "remote"
    with slurm_cluster.controller_stopped():
        job_id = (await post(client, "/jobs/batch", body))["job_id"]
        uploaded = remote / job_id / "merge.sh"
        await eventually(lambda: asyncio.sleep(0, uploaded.exists()), timeout=5)
        for path in ("/jobs/batch", "/user/simulations"):
            response = await client.delete(path, params={"job_id": job_id})
            assert response.status == 200, await response.text()

    async def all_cancelled() -> bool:
        states = jobs_named(slurm_cluster, job_id)
        return len(states) == 3 and set(states.values()) == {"CANCELLED"}

    await eventually(all_cancelled, timeout=30)
    await eventually(lambda: asyncio.sleep(0, not (remote / job_id).exists()), timeout=10)


async def test_a_cancel_is_answered_while_the_login_node_stalls(
    start_batch_app, ssh, slurm_cluster, held_partition, conn
):
    """README "Cancel": CANCELED at once, then scancel. The scancel over SSH runs in the
    background (pending_scancels has it for the reconciler): the answer does not wait for a
    login node that stopped answering. Before, the DELETE waited for the node, up to 85 s
    (behind a reverse proxy, a 504 for a cancel that was done)."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    await slurm_ids(conn)  # submitted
    shell = client.server.app[SLURM].shell("hpc")
    assert (await shell.run("true")).returncode == 0  # the connection is open
    with frozen(ssh):
        response = await asyncio.wait_for(
            client.delete("/jobs/batch", params={"job_id": job_id}), 5
        )
        assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
        assert await conn.fetchval("SELECT job_state FROM simulations") == "CANCELED"

    async def scancelled() -> bool:  # once the node answers again
        states = jobs_named(slurm_cluster, job_id)
        done = await conn.fetchval("SELECT count(*) FROM pending_scancels") == 0
        return done and len(states) == 3 and set(states.values()) == {"CANCELLED"}

    await eventually(scancelled, timeout=60)


async def test_a_refused_merge_job_leaves_no_array_in_slurm(start_batch_app, slurm_cluster, conn):
    """sbatch half-way: the array is taken, the merge job refused (its partition does not
    exist). The simulation is FAILED with the log `slurm`, and the array is cancelled."""
    client, _, _ = await start_batch_app(hang=True)
    options = {**OPTIONS, "collect_options": {"partition": "nowhere"}}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]

    async def failed() -> bool:
        return await conn.fetchval("SELECT job_state FROM simulations") == "FAILED"

    await eventually(failed, timeout=30)
    assert "invalid partition" in (await logfiles_of(conn))["slurm"]

    async def all_ended() -> dict[str, str] | None:
        states = jobs_named(slurm_cluster, job_id)
        alive = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"}
        return states if states and not alive & set(states.values()) else None

    states = await eventually(all_ended, timeout=30)
    assert set(states.values()) == {"CANCELLED"}, states
    assert await conn.fetchval("SELECT count(*) FROM pending_scancels") == 0
