"""The SLURM reconciler against an squeue of the test's own (a script on PATH that counts its
calls): how often it asks each cluster; and the cancels it keeps for a cluster since removed."""

import asyncio
import dataclasses
from pathlib import Path

from server.app import create_app
from server.config import ClusterConfig
from server.keys import POOL, SLURM
from server.runner.slurm.reconcile import Reconciler
from server.store import slurm_jobs
from tests.helpers import login, submit


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
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("scancel", "squeue"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    hpc = ClusterConfig("hpc", "hpc", work_dir=str(tmp_path / "hpc"))
    config = dataclasses.replace(make_config(slurm={"poll_interval": 3600.0}), clusters=(hpc,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client)  # runner "none": stored, then "sent" to SLURM here
    await conn.execute(
        "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, merge_job_id) "
        "SELECT id, 'hpc', '/w/' || job_id, 500, 501 FROM simulations WHERE job_id = $1",
        job_id,
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
    app = client.server.app
    await Reconciler(app[SLURM], app[POOL], config.database.url, 3600.0, direct=False).poll()
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert "scancel 500 501" in ran, ran
