"""Batch jobs over SSH on the real test SLURM and sshd: what SLURM, the cluster's administrator
or the login node do behind the server's back, and what the user then sees."""

import asyncio
import contextlib
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.fakes.simulators import averaging_payload, fake_shieldhit
from tests.helpers import eventually, logfiles_of, post, slurm_ids, slurm_states
from tests.slurm.batch import OPTIONS, ssh_cluster
from tests.slurm.sshd import frozen

TERMINAL = ("COMPLETED", "FAILED", "CANCELED")


async def batch_status(client, job_id: str) -> dict:
    response = await client.get("/jobs/batch", params={"job_id": job_id})
    assert response.status == 200, await response.text()
    return await response.json()


def ended(client, job_id: str):
    async def check() -> dict | None:
        found = await batch_status(client, job_id)
        return found if found["job_state"] in TERMINAL else None

    return check


def squeue_states(cluster) -> dict[str, str]:
    text = cluster.command("squeue", "-h", "--array", "-t", "all", "-o", "%i %T")
    return dict(line.split() for line in text.splitlines())


def gated_shieldhit(root: Path, python: str, failing_tasks: tuple[str, ...] = ()) -> Path:
    """A simulator stand-in that waits for `<job dir>/release_<task>` before it runs the fake
    SHIELD-HIT12A (the one exiting 1 for `failing_tasks`)."""
    good = fake_shieldhit(_dir(root / "good"), python=python, delay=0.01)
    bad = fake_shieldhit(_dir(root / "bad"), python=python, delay=0.01, exit_code=1)
    failing = " ".join(failing_tasks) or "none"
    wrapper = root / "gated_shieldhit"
    wrapper.write_text(
        "#!/bin/sh\n"
        'while [ ! -e "$YAPTIDE_JOB_DIR/release_$YAPTIDE_TASK_ID" ]; do sleep 0.1; done\n'
        f'for t in {failing}; do [ "$t" = "$YAPTIDE_TASK_ID" ] && exec {bad} "$@"; done\n'
        f'exec {good} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def _dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    path.chmod(0o755)
    return path


def release(job_dir: Path, task: int) -> None:
    (job_dir / f"release_{task}").touch()


async def start_gated(start_slurm_app, ssh, remote_python, job_root, failing=()):
    shieldhit = gated_shieldhit(job_root, remote_python, failing)
    return await start_slurm_app(
        shieldhit,
        clusters=(ssh_cluster(ssh, job_root / "remote", remote_python),),
        runner={"kind": "none"},
        slurm={"local_users": True},
    )


@pytest.mark.parametrize("late", [True, False], ids=["squeue-late", "control"])
async def test_a_task_that_completed_while_squeue_was_late_keeps_its_results(
    start_slurm_app, ssh, remote_python, job_root, slurm_cluster, conn, late
):
    """The reconciler reads the open tasks from the database, then asks squeue. Task 1's worker
    reports COMPLETED and its array task ends in between (here: the login node answers the
    squeue a few seconds late; at scale: any of a thousand tasks ending within the squeue's
    round trip). The reconciler must not treat the COMPLETED task as one SLURM ended behind
    its back: it removes its list of result files, so the merge job finds nothing of it.
    Task 2 then fails: the job, with task 1 COMPLETED, must be merged from task 1 (COMPLETED),
    not FAILED with "No task left result files"."""
    client, _, _ = await start_gated(start_slurm_app, ssh, remote_python, job_root, ("2",))
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    array_id, _ = await slurm_ids(conn)
    job_dir = job_root / "remote" / job_id

    async def both_running() -> bool:
        states = squeue_states(slurm_cluster)
        return all(states.get(f"{array_id}_{n}") == "RUNNING" for n in (1, 2))

    await eventually(both_running, timeout=60)
    await asyncio.sleep(1.0)
    with (
        frozen(ssh) if late else contextlib.nullcontext()
    ):  # the next poll has read task 1 as open and waits for squeue
        await asyncio.sleep(1.5)
        release(job_dir, 1)

        async def task_1_done() -> bool:
            tasks = (await batch_status(client, job_id))["job_tasks_status"]
            in_slurm = squeue_states(slurm_cluster).get(f"{array_id}_1")
            return tasks[0]["task_state"] == "COMPLETED" and in_slurm == "COMPLETED"

        await eventually(task_1_done, timeout=30)
    await asyncio.sleep(3.0)  # the reconciler's late squeue is answered, and acted on
    release(job_dir, 2)
    found = await eventually(ended(client, job_id), timeout=90)
    states = [t["task_state"] for t in found["job_tasks_status"]]
    assert (found["job_state"], states) == ("COMPLETED", ["COMPLETED", "FAILED"]), (
        await logfiles_of(conn)
    ).get("merge")


async def test_an_admin_scancel_of_a_queued_array_fails_the_job_saying_so(
    start_batch_app, slurm_cluster, held_partition, conn
):
    """The cluster's administrator scancels a simulation's array while it is still queued
    (PENDING): the user sees the job FAILED, each task's log saying SLURM CANCELLED it, and
    nothing of it is left in SLURM (the merge job is cancelled too)."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    array_id, merge_id = await slurm_ids(conn)
    slurm_cluster.command("scancel", str(array_id))
    found = await eventually(ended(client, job_id), timeout=30)
    assert found["job_state"] == "FAILED"
    assert [t["task_state"] for t in found["job_tasks_status"]] == ["FAILED", "FAILED"]
    logs = await logfiles_of(conn)
    for task in (1, 2):
        assert logs[f"task_{task}_slurm"].startswith(
            f"SLURM ended array task {task} of job {array_id} as CANCELLED"
        ), logs
    states = await eventually(slurm_states(slurm_cluster, array_id, merge_id), timeout=20)
    assert set(states.values()) == {"CANCELLED"}, states


async def test_a_user_cancel_of_a_partly_finished_array(
    start_slurm_app, ssh, remote_python, job_root, slurm_cluster, conn
):
    """DELETE /jobs/batch once task 1 has COMPLETED and task 2 still runs: the job and task 2
    are CANCELED, task 1 stays COMPLETED, and nothing of it is left running in SLURM; the
    states stay so (no later poll turns them into something else)."""
    client, _, _ = await start_gated(start_slurm_app, ssh, remote_python, job_root)
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    array_id, merge_id = await slurm_ids(conn)
    job_dir = job_root / "remote" / job_id
    release(job_dir, 1)

    async def task_1_done() -> bool:
        tasks = (await batch_status(client, job_id))["job_tasks_status"]
        return tasks[0]["task_state"] == "COMPLETED"

    await eventually(task_1_done, timeout=60)
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    states = await eventually(slurm_states(slurm_cluster, array_id, merge_id), timeout=30)
    # Task 1's worker may still be on its way out when the scancel comes: either state.
    assert states[f"{array_id}_1"] in ("COMPLETED", "CANCELLED"), states
    assert (states[f"{array_id}_2"], states[str(merge_id)]) == ("CANCELLED", "CANCELLED"), states
    await asyncio.sleep(2.0)
    found = await batch_status(client, job_id)
    assert [found["job_state"], *(t["task_state"] for t in found["job_tasks_status"])] == [
        "CANCELED",
        "COMPLETED",
        "CANCELED",
    ]


def _node(cluster, state: str) -> None:
    reason = ["reason=review"] if state != "resume" else []
    argv = ("scontrol", "update", f"nodename={cluster.host}", f"state={state}", *reason)
    cluster.command(*argv, check=state != "resume")  # resume: an error if it is back already


async def test_slurmctld_and_sshd_restarted_while_tasks_run(
    start_slurm_app, ssh, remote_python, job_root, slurm_cluster, conn
):
    """The controller restarts, and the login node's sshd is killed and started again, while
    the array runs and its tasks end: the job still ends COMPLETED (nothing decided on a failed
    squeue; the reconciler's connection comes back)."""
    from tests.slurm.sshd import stopped

    client, _, _ = await start_gated(start_slurm_app, ssh, remote_python, job_root)
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    await slurm_ids(conn)
    job_dir = job_root / "remote" / job_id

    async def both_running() -> bool:
        tasks = (await batch_status(client, job_id))["job_tasks_status"]
        return all(t["task_state"] == "RUNNING" for t in tasks)

    await eventually(both_running, timeout=60)
    slurm_cluster.restart_controller()
    await asyncio.sleep(2.0)
    with stopped(ssh):
        release(job_dir, 1)
        await asyncio.sleep(3.0)
    release(job_dir, 2)
    found = await eventually(ended(client, job_id), timeout=120)
    assert found["job_state"] == "COMPLETED", await logfiles_of(conn)


async def test_no_update_key_in_any_process_arguments_while_tasks_run(
    start_slurm_app, ssh, remote_python, job_root, slurm_cluster, conn
):
    client, _, _ = await start_gated(start_slurm_app, ssh, remote_python, job_root)
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    await slurm_ids(conn)

    async def both_running() -> bool:
        tasks = (await batch_status(client, job_id))["job_tasks_status"]
        return all(t["task_state"] == "RUNNING" for t in tasks)

    await eventually(both_running, timeout=60)
    digest = await conn.fetchval("SELECT update_key_sha256 FROM simulations")
    tokens = set()
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = path.read_bytes().decode(errors="replace")
        except OSError:
            continue
        tokens |= set(re.findall(r"[A-Za-z0-9_-]{43}", text))
    assert digest not in {hashlib.sha256(t.encode()).digest() for t in tokens}
    text = slurm_cluster.command("scontrol", "show", "job", "-dd")
    tokens = set(re.findall(r"[A-Za-z0-9_-]{43}", text))
    assert digest not in {hashlib.sha256(t.encode()).digest() for t in tokens}
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    assert response.status == 200


def _other_known_hosts(root: Path) -> Path:
    key = root / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key


async def failed_on(cluster, start_slurm_app, job_root, remote_python, conn) -> tuple[str, str]:
    """A 1-task batch job sent to `cluster`, which must end FAILED: its job_id and `slurm` log."""
    client, _, _ = await start_slurm_app(
        gated_shieldhit(job_root, remote_python),
        clusters=(cluster,),
        runner={"kind": "none"},
        slurm={"local_users": True},
    )
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    found = await eventually(ended(client, job_id), timeout=30)
    assert found["job_state"] == "FAILED"
    return job_id, (await logfiles_of(conn))["slurm"]


async def test_a_changed_host_key_is_refused(
    start_slurm_app, ssh, remote_python, job_root, slurm_cluster, conn
):
    """The login node presents a host key other than the one trusted (a man in the middle):
    the server must not log in; the submission is FAILED saying why, nothing reaches SLURM."""
    import dataclasses

    key = _other_known_hosts(job_root)
    public = (key.with_suffix(".pub")).read_text().split()
    known = job_root / "changed_known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh.port} {public[0]} {public[1]}\n")
    cluster = dataclasses.replace(
        ssh_cluster(ssh, job_root / "remote", remote_python), known_hosts=str(known)
    )
    job_id, log = await failed_on(cluster, start_slurm_app, job_root, remote_python, conn)
    assert "cannot connect" in log, log
    assert not (job_root / "remote" / job_id).exists()


async def test_a_work_dir_the_cluster_user_cannot_write(
    start_slurm_app, ssh, remote_python, job_root, conn
):
    import dataclasses

    locked = job_root / "locked"
    locked.mkdir()
    locked.chmod(0o755)  # root's: the SSH user cannot write there
    cluster = dataclasses.replace(
        ssh_cluster(ssh, job_root / "remote", remote_python), work_dir=str(locked / "jobs")
    )
    _, log = await failed_on(cluster, start_slurm_app, job_root, remote_python, conn)
    assert log.startswith("The job could not be sent to SLURM: hpc: cannot write"), log
