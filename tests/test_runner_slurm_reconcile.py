"""The SLURM reconciler against an squeue of the test's own (a script on PATH that counts its
calls), or with no SLURM at all: how often it asks each cluster, that its lock leaves the pool to
requests, and the cancels of a cluster since removed from the configuration."""

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from server.app import create_app
from server.config import ClusterConfig
from server.keys import POOL, SLURM
from server.runner.slurm.reconcile import IDLE_EVERY, LOCK_KEY, Reconciler
from server.runner.slurm.sbatch import job_name
from server.store import slurm_jobs
from tests.helpers import (
    KEY,
    eventually,
    job_of,
    logfiles_of,
    login,
    payload,
    pid_alive,
    set_key,
    set_simulation,
    set_task,
    status,
    submit,
    tasks_of,
)

RECONCILER_LOCK_PID = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
RECONCILER_LOCK_HELD = (
    "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted"
)


async def test_one_squeue_per_cluster_and_poll(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """README: squeue is polled "one call per cluster"; simulations sent to two clusters in
    turn (hpc, old, hpc, ...) must not make that one call per simulation."""
    calls = tmp_path / "squeue-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\necho squeue >> {calls}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clusters = tuple(
        ClusterConfig(name, name, work_dir=str(tmp_path / name)) for name in ("hpc", "old")
    )
    config = dataclasses.replace(make_config(slurm={"poll_interval": 3600.0}), clusters=clusters)
    client = await aiohttp_client(create_app(config))
    await login(client)
    for number, name in enumerate(["hpc", "old"] * 3):
        job_id = await submit(client)  # runner "none": stored, then "sent" to SLURM here
        await conn.execute(
            "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, "
            "merge_job_id) SELECT id, $2, '/w/' || job_id, $3::bigint, $3::bigint + 1 FROM simulations "
            "WHERE job_id = $1",
            job_id,
            name,
            100 + 2 * number,
        )
    app = client.server.app
    url = config.database.url
    await Reconciler(app[SLURM], app[POOL], url, 3600.0, direct=False).poll()
    assert Path(calls).read_text().splitlines() == ["squeue"] * len(clusters)


async def test_a_cluster_whose_squeue_hangs_delays_no_other(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """The clusters were polled one after another: one whose squeue hung (its controller
    stalled, its login node black-holed) held every other cluster's reconciliation for as long
    as the shell's timeouts (minutes), and a healthy cluster's job could fail for it."""
    calls, hung = tmp_path / "squeue-calls", tmp_path / "hung"
    (tmp_path / "bin").mkdir()
    squeue = tmp_path / "bin" / "squeue"  # the first call hangs, whichever cluster made it
    squeue.write_text(
        f"#!/bin/sh\necho squeue >> {calls}\nmkdir {hung} 2>/dev/null || exit 0\n"
        f"echo $$ > {hung}/pid\nexec sleep 60\n"
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    clusters = tuple(
        ClusterConfig(name, name, work_dir=str(tmp_path / name)) for name in ("hpc", "old")
    )
    client = await aiohttp_client(create_app(make_config(slurm={"poll_interval": 0.1})))
    await login(client)
    for number, name in enumerate(["hpc", "old"]):  # something watched on each
        job_id = await submit(client)
        await conn.execute(
            "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, "
            "merge_job_id) SELECT id, $2, '/w/' || job_id, $3::bigint, $3::bigint + 1 "
            "FROM simulations WHERE job_id = $1",
            job_id,
            name,
            100 + 2 * number,
        )
    config = dataclasses.replace(make_config(slurm={"poll_interval": 0.1}), clusters=clusters)
    await aiohttp_client(create_app(config))  # its reconciler polls every 0.1 s

    async def polled_again() -> bool:
        return calls.exists() and len(calls.read_text().splitlines()) >= 5

    await eventually(polled_again, timeout=10)  # the other cluster, again and again
    # Another process takes the reconciler over (this one's lock session ended): the hung pass
    # is stopped, not left to act beside the new reconciler's.
    holder = await conn.fetchval(RECONCILER_LOCK_PID, LOCK_KEY)
    await conn.execute("SELECT pg_terminate_backend($1)", holder)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    squeue_pid = int((hung / "pid").read_text())

    async def stopped() -> bool:
        return not pid_alive(squeue_pid)

    await eventually(stopped, timeout=10)
    await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def test_a_job_cancelled_while_squeue_runs_stays_cancelled(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """The reconciler decides on what it listed before squeue answered; the owner's cancel can
    land meanwhile. Its verdict (here: SLURM forgot the job) must then change nothing:
    CANCELED is terminal, and no log is added to the cancelled job."""
    merge_waits = "600|N/A|600|PENDING|Dependency|merge\\n"  # the array's tasks: forgotten
    client, job_id, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=merge_waits
    )
    await set_key(conn, job_id)
    identity = {"simulation_id": job_id, "update_key": KEY}
    for state in ("RUNNING", "COMPLETED"):  # one task done: the others are cancelled
        await set_task(client, identity, 1, task_state=state)
    snapshot = reconciler._snapshot

    async def cancelled_meanwhile(*args):
        found = await snapshot(*args)
        response = await client.delete("/jobs/direct", params={"job_id": job_id})
        assert response.status == 200, await response.text()
        return found

    reconciler._snapshot = cancelled_meanwhile  # type: ignore[method-assign]
    await reconciler.poll()
    assert await job_of(conn) == ("CANCELED", True)
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_cancels_of_a_cluster_no_longer_configured_are_kept(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch, caplog
) -> None:
    """A cancel left for a cluster since removed from the configuration: kept (the cluster may
    come back), said once however many polls pass, and the polls go on."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, no scancel: nothing may be run
    await conn.execute(
        "INSERT INTO pending_scancels (cluster, slurm_job_id) VALUES ('old', 7), ('old', 8)"
    )
    hpc = ClusterConfig("hpc", "hpc", work_dir=str(tmp_path / "hpc"))
    config = dataclasses.replace(make_config(slurm={"poll_interval": 0.1}), clusters=(hpc,))
    await aiohttp_client(create_app(config))  # its reconciler polls every 0.1 s
    await asyncio.sleep(1.0)
    assert [r.getMessage() for r in caplog.records if r.name.endswith("reconcile")] == [
        "reconciler: cluster 'old' is no longer configured: SLURM jobs [7, 8] of it cannot be "
        "cancelled",
    ]
    rows = await conn.fetch("SELECT cluster, slurm_job_id FROM pending_scancels ORDER BY 2")
    assert [tuple(row) for row in rows] == [("old", 7), ("old", 8)]


async def test_a_simulation_deleted_while_its_cancel_is_under_way_has_its_jobs_cancelled(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """README: "Every `scancel` is first written down ... kept when the simulation is deleted".
    The cancel committed CANCELED, then read the simulation's SLURM ids to write them down: a
    delete in between (the simulation is terminal at once; another tab, another server process)
    removed the ids first, so nothing was written down, no scancel ran, and the reconciler no
    longer watched the simulation: its SLURM jobs stayed queued, or ran, for good."""
    client, job_id, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=""
    )
    read, reading, release = slurm_jobs.get, asyncio.Event(), asyncio.Event()

    async def first_held(*args):
        """The cancel's read of the SLURM ids waits for the delete."""
        if not reading.is_set():
            reading.set()
            await release.wait()
        return await read(*args)

    monkeypatch.setattr(slurm_jobs, "get", first_held)
    cancel = asyncio.ensure_future(client.delete("/jobs/direct", params={"job_id": job_id}))
    await reading.wait()  # CANCELED is committed
    deleted = await client.delete("/user/simulations", params={"job_id": job_id})
    assert deleted.status == 200, await deleted.text()
    release.set()
    assert (await cancel).status == 200
    await reconciler.poll()
    calls = tmp_path / "calls"
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert "scancel 500 600" in ran, ran


async def _watched_job(aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue: str):
    """An app whose cluster "hpc" answers squeue with `squeue` (and takes any scancel; both
    calls are written to tmp_path/calls), a logged-in client, one of its simulations sent to
    SLURM as array 500, merge job 600, and a reconciler that polls when asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "squeue").write_text(
        f"#!/bin/sh\necho \"squeue $*\" >> {calls}\nprintf '{squeue}'\n"
    )
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "scancel $*" >> {calls}\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    hpc = ClusterConfig("hpc", "hpc", work_dir=str(tmp_path / "hpc"))
    config = dataclasses.replace(make_config(slurm={"poll_interval": 3600.0}), clusters=(hpc,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client)  # runner "none": stored, then "sent" to SLURM here
    await conn.execute(
        "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, merge_job_id) "
        "SELECT id, 'hpc', $2 || '/' || job_id, 500, 600 FROM simulations WHERE job_id = $1",
        job_id,
        hpc.work_dir,
    )
    app = client.server.app
    reconciler = Reconciler(app[SLURM], app[POOL], config.database.url, 3600.0, direct=False)
    return client, job_id, reconciler


async def test_tasks_slurm_forgot_are_failed_each_with_its_log(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """The reconciler's docstring: an array task SLURM has ended *or forgotten* (squeue no
    longer lists it after MinJobAge, and no jobcomp file is configured) while its task is not
    terminal is FAILED with the log `task_<n>_slurm`; else the job waits for ever."""
    *_, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=""
    )
    await reconciler.poll()
    rows = await conn.fetch("SELECT name, content FROM logfiles ORDER BY name")
    assert [row["name"] for row in rows] == [f"task_{n}_slurm" for n in range(1, 5)]
    assert all("SLURM no longer knows this job" in row["content"] for row in rows)
    assert await job_of(conn) == ("FAILED", True)
    assert await tasks_of(conn) == [(n, "FAILED") for n in range(1, 5)]


# `mv` and `rm` first on PATH: as the reconciler first takes task 1's result list away, task
# 1's own COMPLETED arrives (POST /tasks), as when SLURM ends a task while its report is sent.
COMPLETING = """#!/bin/sh
case "$*" in *"/task_1/.yaptide_results.json "*|*/task_1/.yaptide_results.json)
  [ -e {fired} ] || {python} -c 'import sys, urllib.request as r; r.urlopen(r.Request(sys.argv[1], sys.argv[2].encode(), {{"Content-Type": "application/json"}}))' {url} '{body}'
  touch {fired};;
esac
exec /bin/$(basename "$0") "$@"
"""


async def test_a_task_whose_completed_comes_in_as_slurm_ends_it_keeps_its_results_listed(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """The reconciler takes a task's result list away before it fails the task (the merge
    merges listed tasks only); when the task's COMPLETED was stored first, the task stays
    COMPLETED and its list must stay too, or the merge leaves its results out."""
    merge_waits = "600|N/A|600|PENDING|Dependency|merge\\n"  # the array's tasks: forgotten
    client, job_id, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=merge_waits
    )
    await set_key(conn, job_id)
    identity = {"simulation_id": job_id, "update_key": KEY}
    await set_task(client, identity, 1, task_state="RUNNING")
    update = {**identity, "task_id": 1, "update_dict": {"task_state": "COMPLETED"}}
    url = client.make_url("/tasks")
    fired = tmp_path / "fired"
    hook = COMPLETING.format(python=sys.executable, url=url, body=json.dumps(update), fired=fired)
    for name in ("mv", "rm"):
        (tmp_path / "bin" / name).write_text(hook)
        (tmp_path / "bin" / name).chmod(0o755)
    listed = tmp_path / "hpc" / job_id / "task_1" / ".yaptide_results.json"
    listed.parent.mkdir(parents=True)
    listed.write_text('["mesh.bdo"]')
    await reconciler.poll()
    assert await tasks_of(conn) == [(1, "COMPLETED"), *[(n, "FAILED") for n in range(2, 5)]]
    assert listed.read_text() == '["mesh.bdo"]'
    assert list(listed.parent.iterdir()) == [listed]
    assert sorted(await logfiles_of(conn)) == [f"task_{n}_slurm" for n in range(2, 5)]


async def test_a_merge_job_slurm_forgot_fails_the_job(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """The array still runs, but SLURM no longer knows the merge job (it ended long ago, say by
    an administrator's scancel, and was forgotten while the server was down): nothing will
    merge, so the job is FAILED with the log `merge` rather than waiting for ever."""
    running = "".join(f"500|{n}|{500 + n}|RUNNING|None|array\\n" for n in range(1, 5))
    *_, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=running
    )
    await reconciler.poll()
    assert [row["name"] for row in await conn.fetch("SELECT name FROM logfiles")] == ["merge"]
    assert await job_of(conn) == ("FAILED", True)


async def test_jobs_named_after_an_ended_simulation_whose_ids_never_reached_us_are_cancelled(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """sbatch can fail ("Socket timed out on send/recv operation") while the controller takes
    the job later: the simulation is FAILED and the job's id unknown. The reconciler cancels
    live jobs named after a simulation that has ended, and only those: not one whose submission
    is still under way, nor another deployment's (a job_id this database never had)."""
    client, watched, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=""
    )
    failed, sending = await submit(client), await submit(client)
    await set_simulation(conn, failed, job_state="FAILED")
    stranger = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    lines = [f"500|1|501|RUNNING|None|{job_name(watched)}"]
    lines += [f"600|N/A|600|PENDING|Dependency|{job_name(watched)}-merge"]
    lines += [f"700|{n}|70{n}|PENDING|BeginTime|{job_name(failed)}" for n in (1, 2)]
    lines += [f"710|N/A|710|PENDING|Dependency|{job_name(failed)}-merge"]
    lines += [f"720|1|721|CANCELLED|None|{job_name(failed)}"]  # ended: nothing to cancel
    lines += [f"800|N/A|800|PENDING|None|{job_name(sending)}"]  # its sbatch still answering
    lines += [f"900|N/A|900|RUNNING|None|{job_name(stranger)}"]  # another deployment's
    calls = tmp_path / "calls"
    (tmp_path / "bin" / "squeue").write_text(
        f"#!/bin/sh\necho \"squeue $*\" >> {calls}\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n"
    )
    await reconciler.poll()
    ran = calls.read_text().splitlines()
    assert [line for line in ran if line.startswith("scancel")] == ["scancel 700 710"]


async def test_a_cluster_with_nothing_watched_is_looked_at_for_strays_once_a_minute(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """A stray job (sbatch timed out on a busy controller, which took the job later) is on a
    cluster where nothing else is watched: its squeue is asked one poll in IDLE_EVERY (not
    every poll: an SSH command each time), and the stray cancelled."""
    client, _, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=""
    )
    failed = await submit(client)
    await set_simulation(conn, failed, job_state="FAILED")
    await conn.execute("UPDATE slurm_jobs SET done = true")  # nothing watched on "hpc"
    (tmp_path / "bin" / "squeue").write_text(
        f'#!/bin/sh\necho "squeue $*" >> {tmp_path / "calls"}\n'
        f"echo '700|N/A|700|PENDING|BeginTime|{job_name(failed)}'\n"
    )
    calls = tmp_path / "calls"
    for _ in range(IDLE_EVERY - 1):
        await reconciler.poll()
    assert not calls.exists()
    await reconciler.poll()
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["squeue", "scancel"]


async def test_a_task_squeue_forgot_beside_one_it_still_lists_gets_its_state_from_jobcomp(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """README: once squeue forgets a job (MinJobAge), "the final state then comes from the
    cluster's jobcomp/filetxt file when jobcomp_file is set". Task 1 ended by its time limit
    while the server was down longer than MinJobAge; tasks 2-4 still run, so squeue still lists
    the array. The jobcomp file was not read for task 1: its log said "SLURM no longer knows
    this job and no jobcomp file says how it ended" instead of TIMEOUT."""
    running = "".join(f"500|{n}|{500 + n}|RUNNING|None|array\\n" for n in range(2, 5))
    running += "600|N/A|600|PENDING|Dependency|merge\\n"
    client, _, reconciler = await _watched_job(
        aiohttp_client, make_config, conn, tmp_path, monkeypatch, squeue=running
    )
    jobcomp = tmp_path / "jobcomp.log"
    jobcomp.write_text(
        "JobId=501 UserId=root(0) Name=array JobState=TIMEOUT Partition=debug "
        "ArrayJobId=500 ArrayTaskId=1 DerivedExitCode=0:0 ExitCode=0:1 \n"
    )
    dispatcher = client.server.app[SLURM]
    hpc = dispatcher.clusters["hpc"]
    dispatcher.clusters["hpc"] = dataclasses.replace(hpc, jobcomp_file=str(jobcomp))
    await reconciler.poll()
    log = (await logfiles_of(conn))["task_1_slurm"]
    assert log.startswith("SLURM ended array task 1 of job 500 as TIMEOUT (exit code 0:1) "), log
    assert await tasks_of(conn) == [(1, "FAILED"), (2, "PENDING"), (3, "PENDING"), (4, "PENDING")]


async def test_the_reconciler_leaves_the_pool_to_requests(
    aiohttp_client, make_config, conn, no_sbatch
) -> None:
    """The reconciler's advisory lock lives on a connection of its own: with the smallest pool
    (database.pool_size = 1), requests still get the pool's connection."""
    config = make_config(runner={"kind": "slurm"}, database={"pool_size": 1})
    client = await aiohttp_client(create_app(config))
    await eventually(lambda: conn.fetchval(RECONCILER_LOCK_HELD, LOCK_KEY))

    async def simulations() -> int:
        await login(client)
        return (await client.get("/user/simulations")).status

    assert await asyncio.wait_for(simulations(), timeout=10) == 200


async def test_cancel_of_a_job_on_a_cluster_removed_from_the_configuration(
    aiohttp_client, make_config, conn, no_sbatch
) -> None:
    """The operator removed the [[clusters]] entry "retired" (and restarted) while a job sent
    there was still queued: cancelling it is a 200 and the job CANCELED, never a 500."""
    cluster = ClusterConfig("prometheus", "Prometheus (Cyfronet)")
    config = dataclasses.replace(make_config(slurm={"local_users": True}), clusters=(cluster,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    response = await client.post("/jobs/direct", json=payload())  # runner "none": PENDING
    job_id = (await response.json())["job_id"]
    await conn.execute(
        "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, merge_job_id) "
        "SELECT id, 'retired', '/scratch/' || job_id, 101, 102 FROM simulations"
    )
    response = await client.delete("/jobs/batch", params={"job_id": job_id})
    found = (response.status, await response.json(), (await status(client, job_id))["job_state"])
    assert found == (200, {"message": "Job cancelled"}, "CANCELED")
