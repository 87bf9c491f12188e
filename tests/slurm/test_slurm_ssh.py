"""POST /jobs/batch: a simulation sent to a [[clusters]] entry over SSH (asyncssh, key-only
login to a real sshd as a user of its own), on the real test SLURM; batch_options checked
against the whitelist of #SBATCH options; a login node that refuses SSH or stops answering; and
the submission going on after the 202 (a cancel, a delete, a shutdown meanwhile)."""

import asyncio
import dataclasses
import hashlib
import io
import logging
import pwd
import re
import stat
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from server.keys import POOL, SLURM
from server.runner.slurm import dispatcher as dispatcher_module
from server.runner.slurm import reconcile as reconcile_module
from server.runner.slurm import ssh as ssh_module
from server.runner.slurm.sbatch import job_name
from server.runner.slurm.shell import ShellError
from tests.fakes.openid_provider import BACKEND, USERNAME
from tests.fakes.simulators import averaging_payload, fake_shieldhit
from tests.helpers import (
    MESH_MEANS,
    eventually,
    logfiles_of,
    page_means,
    post,
    results_of,
    running_simulators,
    slurm_ids,
    slurm_states,
    submissions_ended,
    submit,
    wait_gone,
)
from tests.slurm.batch import CLUSTER, OPTIONS, jobs_named, ssh_cluster
from tests.slurm.sshd import SshServer, frozen, stopped


async def batch_status(client, job_id: str) -> dict:
    response = await client.get("/jobs/batch", params={"job_id": job_id})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_simulation_over_ssh(start_batch_app, ssh: SshServer, job_root, conn):
    client, _, _ = await start_batch_app(delay=0.02)
    response = await client.get("/clusters")
    assert await response.json() == {"message": "Available clusters", "clusters": [CLUSTER]}
    body = {**averaging_payload(ntasks=4), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]

    async def completed() -> dict | None:
        found = await batch_status(client, job_id)
        assert found["job_state"] != "FAILED", await client.get("/logfiles?job_id=" + job_id)
        return found if found["job_state"] == "COMPLETED" else None

    found = await eventually(completed, timeout=120)
    assert [t["task_state"] for t in found["job_tasks_status"]] == ["COMPLETED"] * 4
    assert page_means(await results_of(client, job_id)) == {
        key: pytest.approx(value, rel=1e-5) for key, value in MESH_MEANS.items()
    }
    # It ran as the SSH user, in the cluster's work directory, with the user's options.
    job_dir = job_root / "remote" / job_id
    assert pwd.getpwuid(job_dir.stat().st_uid).pw_name == ssh.user
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700  # for the cluster account only
    assert sorted(p.name for p in job_dir.glob("task_*") if p.is_dir()) == [
        f"task_{n}" for n in range(1, 5)
    ]
    script = (job_dir / "array.sh").read_text()
    assert "#SBATCH --time=5\n#SBATCH --cpus-per-task=1\n#SBATCH --mem-per-cpu=200M\n" in script
    assert "#SBATCH --time=00:05:00\n" in (job_dir / "merge.sh").read_text()
    # No file holds the key: no 43-character token there hashes to the stored digest.
    digest = await conn.fetchval("SELECT update_key_sha256 FROM simulations")
    files = [p for p in job_dir.rglob("*") if p.is_file() and p.suffix in (".sh", ".log", ".json")]
    tokens = {t for p in files for t in re.findall(r"[A-Za-z0-9_-]{43}", p.read_text())}
    assert len(files) >= 10 and digest not in {hashlib.sha256(t.encode()).digest() for t in tokens}
    assert await conn.fetchval("SELECT platform FROM simulations") == "batch"
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is already COMPLETED"},
    )
    # Deleted: its directory on the cluster goes too (over SSH, in the background).
    response = await client.delete("/user/simulations", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})

    async def removed() -> bool:
        return not job_dir.exists()

    await eventually(removed, timeout=30)


async def test_the_sweep_removes_cluster_job_directories_of_no_simulation(
    start_batch_app, job_root, conn
):
    """What a delete could not remove (the cluster was unreachable, the server stopped) the
    periodic sweep does; anything in work_dir not named by a job_id is left alone."""
    client, _, _ = await start_batch_app()
    app = client.server.app
    remote = job_root / "remote"
    gone, pending, other = str(uuid.uuid4()), await submit(client), "notes-2026"
    await conn.execute("INSERT INTO deleted_job_ids (job_id) VALUES ($1)", gone)
    foreign = str(uuid.uuid4())  # of another deployment sharing the work_dir
    made = (
        await app[SLURM]
        .shell("hpc")
        .run(  # as the SSH user, like the jobs' own directories
            f"mkdir -p {remote}/{gone}/task_1 {remote}/{pending} {remote}/{other}"
            f" {remote}/{foreign} && touch {remote}/{gone}/task_1/x"
        )
    )
    assert made.returncode == 0, made.stderr
    # The app's own sweep at start runs beside the test: it may be the one that removes `gone`.
    assert await app[SLURM].sweep(app[POOL], 3600.0) in ([gone], [])
    assert sorted(path.name for path in remote.iterdir()) == sorted([pending, other, foreign])


LOCKED = [
    (
        {"array_header": "#SBATCH --time=5\n#SBATCH --account=grant-of-another-team"},
        "Invalid batch_options.array_header: line 2: option --account is locked on cluster hpc",
    ),
    (
        {"collect_options": {"--qos": "high"}},
        "Invalid batch_options.collect_options: option --qos is locked on cluster hpc",
    ),
]


@pytest.mark.parametrize(("change", "message"), LOCKED)
async def test_options_the_operator_locked(start_batch_app, conn, change, message):
    """A cluster's `locked_options` are refused to users; the rest of the whitelist is not."""
    client, _, _ = await start_batch_app(locked_options="account, --qos", hang=True)
    body = {**averaging_payload(ntasks=1), "batch_options": {**OPTIONS, **change}}
    assert await post(client, "/jobs/batch", body, 400) == {"message": message}
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
    body["batch_options"] = OPTIONS  # --time, --cpus-per-task, --mem-per-cpu: not locked
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})


async def test_local_users_without_the_switch(start_batch_app, conn):
    client, _, _ = await start_batch_app(local_users=False)
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    refused = {"message": "Local users cannot access HPC clusters"}
    assert await post(client, "/jobs/batch", body, 403) == refused
    response = await client.get("/clusters")
    assert (response.status, await response.json()) == (403, refused)
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


async def test_cancel_over_ssh(start_batch_app, job_root, slurm_cluster, conn):
    client, _, _ = await start_batch_app(hang=True)
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    job_dir = job_root / "remote" / job_id

    pids = await eventually(running_simulators(job_dir), timeout=60)
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    found = await batch_status(client, job_id)
    assert [found["job_state"], *(t["task_state"] for t in found["job_tasks_status"])] == [
        "CANCELED",
        "CANCELED",
        "CANCELED",
    ]
    await wait_gone(pids)
    states = await eventually(slurm_states(slurm_cluster, *await slurm_ids(conn)), timeout=20)
    assert set(states.values()) == {"CANCELLED"}, states


async def test_a_cancel_the_cluster_missed_is_done_when_it_is_back(
    start_batch_app, ssh, slurm_cluster, held_partition, conn
):
    """The login node refuses SSH when the user cancels, then deletes, a simulation still queued
    in SLURM: once the node answers again, the reconciler cancels its SLURM jobs."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    ids = await slurm_ids(conn)
    squeue = ("squeue", "-h", "--array", "-t", "all", "-o", "%T", "-j", ",".join(map(str, ids)))
    with stopped(ssh):
        response = await client.delete("/jobs/batch", params={"job_id": job_id})
        assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
        response = await client.delete("/user/simulations", params={"job_id": job_id})
        assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
        assert slurm_cluster.command(*squeue).split() == ["PENDING"] * 3  # 2 tasks, the merge
    states = await eventually(slurm_states(slurm_cluster, *ids), timeout=30)
    assert set(states.values()) == {"CANCELLED"}, states

    async def nothing_pending() -> bool:
        return await conn.fetchval("SELECT count(*) FROM pending_scancels") == 0

    await eventually(nothing_pending)


def batch_state_is(client, job_id: str, state: str):
    """A check for `eventually`: the GET /jobs/batch body once the job is in `state`."""

    async def check() -> dict | None:
        found = await batch_status(client, job_id)
        return found if found["job_state"] == state else None

    return check


async def test_a_stalled_login_node_does_not_hold_the_submission(
    start_batch_app, ssh, conn, monkeypatch
):
    """The login node stops answering on an open connection (a black hole): POST /jobs/batch
    answers 202 at once (behind nginx, a request waiting for the upload would get a 504),
    the simulation is PENDING while the upload waits, then FAILED as when sbatch refuses it,
    once the upload gives up within COMMAND_TIMEOUT (not asyncssh's keepalive, ~2 minutes)."""
    monkeypatch.setattr(ssh_module, "COMMAND_TIMEOUT", 5.0)
    client, _, _ = await start_batch_app()
    shell = client.server.app[SLURM].shell("hpc")
    assert (await shell.run("true")).returncode == 0  # the one connection, reused by the upload
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    with frozen(ssh):
        started = time.monotonic()
        response = await asyncio.wait_for(client.post("/jobs/batch", json=body), 20)
        answered = time.monotonic() - started
        found = await response.json()
        job_id = found.get("job_id")
        assert (response.status, found) == (202, {"message": "Job submitted", "job_id": job_id})
        assert answered < 2.0, f"answered after {answered:.1f} s"
        job = await batch_status(client, job_id)
        assert [job["job_state"], *(t["task_state"] for t in job["job_tasks_status"])] == [
            "PENDING"
        ] * 3
        job = await eventually(batch_state_is(client, job_id, "FAILED"), timeout=20)
        failed = time.monotonic() - started
    assert [t["task_state"] for t in job["job_tasks_status"]] == ["FAILED"] * 2
    assert 5.0 <= failed < 5.0 + 5.0, failed
    assert await logfiles_of(conn) == {
        "slurm": "The job could not be sent to SLURM: hpc: uploading the job's files stalled "
        "(no progress for 5 s)"
    }
    assert await conn.fetchval("SELECT count(*) FROM slurm_jobs") == 0


@pytest.mark.parametrize("delete", [False, True], ids=["cancelled", "cancelled-and-deleted"])
async def test_a_cancel_while_the_submission_is_in_flight_leaves_no_job_in_slurm(
    start_batch_app, job_root, slurm_cluster, held_partition, conn, delete
):
    """The user cancels (and deletes) a simulation while its sbatch still waits for a busy
    controller, so before its SLURM ids reach the server (the cancel has nothing to scancel
    yet): it is CANCELED, and once sbatch gets its answer nothing of it is left in SLURM."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}  # what is not cancelled stays PENDING there
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=2), "batch_options": options}
    with slurm_cluster.controller_stopped():  # sbatch waits (MessageTimeout, 10 s)
        response = await asyncio.wait_for(client.post("/jobs/batch", json=body), 5)
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]
        last_file = job_root / "remote" / job_id / "merge.sh"

        async def uploaded() -> bool:  # the last file of the upload: sbatch comes next
            return last_file.exists()

        await eventually(uploaded, timeout=5)
        response = await client.delete("/jobs/batch", params={"job_id": job_id})
        assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
        assert (await batch_status(client, job_id))["job_state"] == "CANCELED"
        if delete:
            response = await client.delete("/user/simulations", params={"job_id": job_id})
            assert (response.status, await response.json()) == (
                200,
                {"message": "Simulation deleted"},
            )
        assert await conn.fetchval("SELECT count(*) FROM slurm_jobs") == 0

    async def all_cancelled() -> dict[str, str] | None:
        states = jobs_named(slurm_cluster, job_id)
        return states if len(states) == 3 and set(states.values()) == {"CANCELLED"} else None

    try:
        await eventually(all_cancelled, timeout=30)  # 2 array tasks and the merge job
    except AssertionError:
        raise AssertionError(f"left in SLURM: {jobs_named(slurm_cluster, job_id)}") from None
    if not delete:
        assert (await batch_status(client, job_id))["job_state"] == "CANCELED"
    assert await logfiles_of(conn) == {}

    async def nothing_pending() -> bool:
        return await conn.fetchval("SELECT count(*) FROM pending_scancels") == 0

    await eventually(nothing_pending)


async def test_a_shutdown_with_a_submission_in_flight_ends_within_the_grace(
    start_batch_app, ssh, conn, monkeypatch, caplog
):
    """The server stops while a submission waits for a stalled login node: it waits
    SUBMIT_GRACE for it, not the upload's own timeout (60 s), then abandons it without an
    error. The simulation stays PENDING with no SLURM ids, for the reconciler (of the next
    start) to fail once UNSUBMITTED_AFTER has passed."""
    monkeypatch.setattr(dispatcher_module, "SUBMIT_GRACE", 1.0)
    client, _, _ = await start_batch_app()
    shell = client.server.app[SLURM].shell("hpc")
    assert (await shell.run("true")).returncode == 0  # the one connection, reused by the upload
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    with frozen(ssh):
        response = await asyncio.wait_for(client.post("/jobs/batch", json=body), 5)
        assert response.status == 202, await response.text()
        started = time.monotonic()
        await asyncio.wait_for(client.close(), 20)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.0 + 2.0, elapsed
    assert await conn.fetchval("SELECT job_state FROM simulations") == "PENDING"
    assert await conn.fetchval("SELECT count(*) FROM slurm_jobs") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_only_simulations_no_live_server_holds_count_as_never_sent(
    start_batch_app, conn, monkeypatch
):
    """A reconciler failed every unfinished simulation without SLURM ids five minutes after
    its submission: one still waiting in a busy server's queue (and then sent, for a FAILED
    simulation), and, with runner.kind = "slurm", the direct ones of the local runner and of
    external workers on the same database. Here the deadline is 2 s, and the cluster's turns
    never come: a submission its server holds outlives the deadline, as does an external
    worker's job (runner.kind = "none")."""
    monkeypatch.setattr(reconcile_module, "UNSUBMITTED_AFTER", 2.0)
    monkeypatch.setattr(dispatcher_module, "SUBMITS_AT_ONCE", 0)
    client, _, _ = await start_batch_app()
    external = await submit(client, averaging_payload(ntasks=1))
    await conn.execute("UPDATE simulations SET start_time = start_time - interval '1 hour'")
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    held = (await (await client.post("/jobs/batch", json=body)).json())["job_id"]
    await asyncio.sleep(4)
    assert await states(conn) == {external: "PENDING", held: "PENDING"}
    lease = "SELECT now() - slurm_lease FROM simulations WHERE job_id = $1"
    assert await conn.fetchval(lease, held) < timedelta(seconds=1)  # renewed every 0.3 s


async def states(conn) -> dict[str, str]:
    return dict(await conn.fetch("SELECT job_id, job_state FROM simulations"))


async def test_sso_user_without_the_switch(start_slurm_app, ssh, remote_python, job_root, provider):
    client, _, _ = await start_slurm_app(
        fake_shieldhit(job_root, python=remote_python),
        new_user=None,
        clusters=(ssh_cluster(ssh, job_root / "remote", remote_python),),
        runner={"kind": "none"},
        keycloak={"issuer": provider.issuer, "client_ids": BACKEND},
    )
    token = provider.token(exp=int(time.time()) + 300)
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.post("/auth/keycloak", json={"username": USERNAME}, headers=headers)
    assert response.status == 202, await response.text()
    response = await client.get("/clusters")
    assert await response.json() == {"message": "Available clusters", "clusters": [CLUSTER]}
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]

    async def completed() -> bool:
        return (await batch_status(client, job_id))["job_state"] == "COMPLETED"

    await eventually(completed, timeout=120)


async def test_unavailable_cluster(start_slurm_app, ssh, remote_python, job_root, conn):
    cluster = dataclasses.replace(
        ssh_cluster(ssh, job_root / "remote", remote_python), available=False
    )
    client, _, _ = await start_slurm_app(
        fake_shieldhit(job_root), clusters=(cluster,), slurm={"local_users": True}
    )
    response = await client.get("/clusters")
    listed = {**CLUSTER, "available": False}
    assert await response.json() == {"message": "Available clusters", "clusters": [listed]}
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    assert await post(client, "/jobs/batch", body, 400) == {
        "message": "Cluster hpc is not available"
    }
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


async def test_the_ui_dialect_runs_a_batch_simulation(start_batch_app, conn):
    """The web UI's calls for a batch run (ui-client.md): submit to /ui/jobs/batch with its
    batch_options, find it listed as BATCH, poll /ui/jobs/batch (the URL it builds from the
    platform) until COMPLETED, then cancel gets the main API's 409."""
    client, _, _ = await start_batch_app(delay=0.01)
    body = {**averaging_payload(ntasks=2), "batch_options": OPTIONS}
    job_id = (await post(client, "/ui/jobs/batch", body))["job_id"]
    response = await client.get("/ui/user/simulations", params={"page_size": 10})
    (item,) = (await response.json())["simulations"]
    assert (item["job_id"], item["metadata"]) == (
        job_id,
        {"platform": "BATCH", "server": "Yaptide", "input_type": "FILES", "sim_type": "shieldhit"},
    )

    async def completed() -> dict | None:
        response = await client.get("/ui/jobs/batch", params={"job_id": job_id})
        found = await response.json()
        assert found["job_state"] != "FAILED", found
        return found if found["job_state"] == "COMPLETED" else None

    found = await eventually(completed, timeout=120)
    times = [task["estimated_time"] for task in found["job_tasks_status"]]
    assert all(t is None or set(t) == {"hours", "minutes", "seconds"} for t in times)
    response = await client.delete("/ui/jobs/batch", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is already COMPLETED"},
    )


OUTPUTS = {
    "utf-8": "dose 1.5 µGy\n".encode(),
    "a latin-1 byte": b"dose 1.5 \xb5Gy\n",  # a Fortran code's "µ"
    "64 KiB cut inside a character": b"x" + "é".encode() * 40_000 + b"\n",
}


@pytest.mark.parametrize("output", OUTPUTS.values(), ids=OUTPUTS.keys())
async def test_a_task_ended_by_slurm_keeps_its_output_tail_over_ssh(
    start_batch_app, job_root, slurm_cluster, conn, output
):
    """An admin scancels the one array task: its log `task_1_slurm` carries the tail of its
    output whatever its bytes (U+FFFD for what is not UTF-8), as on the login node."""
    client, _, _ = await start_batch_app(hang=True)
    body = {**averaging_payload(ntasks=1), "batch_options": OPTIONS}
    job_id = (await post(client, "/jobs/batch", body))["job_id"]
    job_dir = job_root / "remote" / job_id

    async def running() -> bool:
        return (job_dir / "simrunning_1").exists()

    await eventually(running, timeout=60)
    with (job_dir / "task_1.log").open("ab") as log_file:
        log_file.write(output + b"last line of the simulator\n")
    array_id, _ = await slurm_ids(conn)
    slurm_cluster.command("scancel", f"{array_id}_1")

    async def failed() -> bool:
        return (await batch_status(client, job_id))["job_state"] == "FAILED"

    await eventually(failed, timeout=30)
    log = (await logfiles_of(conn))["task_1_slurm"]
    assert log.startswith(f"SLURM ended array task 1 of job {array_id} as CANCELLED")
    assert "\nlast line of the simulator\n" in log, log


async def test_an_sbatch_answered_after_the_command_timeout_leaves_no_job_in_slurm(
    start_batch_app, slurm_cluster, held_partition, conn, monkeypatch
):
    """slurmctld answers sbatch only after the server gave up on the command (a busy
    controller): the simulation is FAILED, so nothing it submitted may stay queued in SLURM,
    unknown to the server, which could never cancel it."""
    monkeypatch.setattr(ssh_module, "COMMAND_TIMEOUT", 2.0)
    client, _, _ = await start_batch_app()
    assert (await client.server.app[SLURM].shell("hpc").run("true")).returncode == 0
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=1), "batch_options": options}
    with slurm_cluster.controller_stopped():
        job_id = (await post(client, "/jobs/batch", body))["job_id"]
        await eventually(batch_state_is(client, job_id, "FAILED"), timeout=10)
    assert (await logfiles_of(conn))["slurm"].startswith("The job could not be sent to SLURM")
    await asyncio.sleep(5)  # the remote sbatch gets its answer meanwhile
    name = job_name(job_id)
    states = slurm_cluster.command("squeue", "-h", "--states=all", "--name", name, "-o", "%T")
    assert set(states.split()) <= {"CANCELLED"}, states


async def test_many_submissions_to_one_cluster_at_once_all_reach_slurm(
    start_batch_app, held_partition, slurm_cluster, conn
):
    """Sixteen users submit to the same cluster at the same moment: sshd opens at most
    MaxSessions (default 10) sessions on the one shared connection, and every submission still
    reaches SLURM (none FAILED, none of the others' sbatch cut off)."""
    client, _, _ = await start_batch_app()
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=1), "batch_options": options}
    responses = await asyncio.gather(*(client.post("/jobs/batch", json=body) for _ in range(16)))
    assert [r.status for r in responses] == [202] * 16
    await eventually(submissions_ended(conn, 16), timeout=60)
    queued = slurm_cluster.command("squeue", "-h", f"--partition={held_partition}", "-o", "%F")
    tracked = await conn.fetch("SELECT array_job_id, merge_job_id FROM slurm_jobs")
    known = {job_id for row in tracked for job_id in row}
    # No job in SLURM that the server does not know of (it could never cancel it).
    assert {int(line) for line in queued.split()} <= known, (queued, known)
    logs = [row["content"] for row in await conn.fetch("SELECT content FROM logfiles")]
    assert await conn.fetchval("SELECT count(*) FROM slurm_jobs") == 16, logs
    states = await conn.fetch("SELECT job_state FROM simulations")
    assert {r["job_state"] for r in states} == {"PENDING"}


@pytest.fixture
def small_disk(job_root: Path):
    """A 1 MiB filesystem on the cluster, as a work_dir whose quota is nearly used up."""
    mount = job_root / "small-disk"
    mount.mkdir()
    options = "size=1m,mode=0777"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_an_upload_the_cluster_disk_refused_does_not_keep_its_space(
    start_slurm_app, ssh, remote_python, job_root, small_disk, held_partition, conn
):
    """An input too large for what is left of the cluster account's disk or quota fails its
    submission; what of it was uploaded must not stay there (for job_dir_ttl, a week) holding
    the space, so that a smaller simulation that fits still goes through."""
    client, _, _ = await start_slurm_app(
        fake_shieldhit(job_root, python=remote_python),
        clusters=(ssh_cluster(ssh, small_disk, remote_python),),
        runner={"kind": "none"},
        slurm={"local_users": True},
    )
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    large = {**averaging_payload(ntasks=1), "batch_options": options}
    large["input_files"] = {**large["input_files"], "big.dat": "x" * 1_500_000}
    response = await client.post(
        "/jobs/batch",
        data=io.BytesIO(orjson.dumps(large)),
        headers={"Content-Type": "application/json"},
    )
    first = (await response.json())["job_id"]
    await eventually(batch_state_is(client, first, "FAILED"))
    log = (await logfiles_of(conn))["slurm"]
    assert re.fullmatch(
        rf"The job could not be sent to SLURM: hpc: cannot write {small_disk}/{first}/"
        r"\S+: Failure \(is the cluster's disk or quota full\?\)",
        log,
    ), log

    async def nothing_left() -> bool:
        return not (small_disk / first).exists()

    await eventually(nothing_left, timeout=10)
    small = {**averaging_payload(ntasks=1), "batch_options": options}
    second = (await post(client, "/jobs/batch", small))["job_id"]
    await eventually(submissions_ended(conn, 2))
    found = await batch_status(client, second)
    assert found["job_state"] == "PENDING", await logfiles_of(conn)


async def test_one_command_that_times_out_leaves_the_others_on_the_connection_alone(
    start_batch_app, slurm_cluster, held_partition, conn, monkeypatch
):
    """A command slower than the command timeout (an `rm -rf` of a large job directory, a grep
    of a large jobcomp file) gives up; a submission running meanwhile on the same connection,
    whose sbatch waits a moment for slurmctld, still reaches SLURM."""
    monkeypatch.setattr(ssh_module, "COMMAND_TIMEOUT", 2.0)
    client, _, _ = await start_batch_app()
    shell = client.server.app[SLURM].shell("hpc")
    held = {"partition": held_partition}
    options = {**OPTIONS, "array_options": held, "collect_options": held}
    body = {**averaging_payload(ntasks=1), "batch_options": options}
    slow = asyncio.ensure_future(shell.run("sleep 4"))
    await asyncio.sleep(0.5)
    with slurm_cluster.controller_stopped():  # sbatch answered 1.7 s later, within its timeout
        submitted = asyncio.ensure_future(post(client, "/jobs/batch", body))
        await asyncio.sleep(1.7)
    job_id = (await submitted)["job_id"]
    with pytest.raises(ShellError):
        await slow
    await eventually(submissions_ended(conn))
    assert (await batch_status(client, job_id))["job_state"] == "PENDING", await logfiles_of(conn)


async def test_a_command_that_times_out_on_a_dead_link_drops_the_connection(
    start_batch_app, ssh, monkeypatch
):
    """The login node stops answering (a black hole): the command gives up, the connection is
    dropped, and the next command, once the node answers again, goes through on a new one."""
    monkeypatch.setattr(ssh_module, "COMMAND_TIMEOUT", 2.0)
    monkeypatch.setattr(ssh_module, "PROBE_TIMEOUT", 1.0)
    client, _, _ = await start_batch_app()
    shell = client.server.app[SLURM].shell("hpc")
    assert (await shell.run("true")).returncode == 0
    with frozen(ssh):
        started = time.monotonic()
        with pytest.raises(ShellError, match="no answer within 2 s"):
            await shell.run("true")
        assert time.monotonic() - started < 2.0 + 1.0 + 2.0
    assert (await shell.run("echo back")).stdout == "back\n"


async def test_slow_commands_that_timed_out_do_not_wedge_the_connection(
    start_batch_app, monkeypatch
):
    """README: a command that is only slow (a large `rm -rf`) is given up alone and the
    connection kept. sshd keeps such a command's session (MaxSessions, default 10) until it
    ends, though its channel is closed: ten slow removals (deleted simulations' job
    directories on a slow file system) must not leave the cluster refusing every command
    on a login node that answers, until they end."""
    monkeypatch.setattr(ssh_module, "COMMAND_TIMEOUT", 2.0)
    monkeypatch.setattr(ssh_module, "PROBE_TIMEOUT", 2.0)
    client, _, _ = await start_batch_app()
    shell = client.server.app[SLURM].shell("hpc")
    assert (await shell.run("true")).returncode == 0
    slow = await asyncio.gather(*(shell.run("sleep 40") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, ShellError) for result in slow), slow
    started = time.monotonic()
    try:
        done = await shell.run("echo alive", retry=True)
    except ShellError as exc:
        raise AssertionError(
            f"after {time.monotonic() - started:.1f} s: {exc} (the login node answers)"
        ) from None
    assert done.stdout == "alive\n"
