"""A [[clusters]] entry whose SSH key file asyncssh cannot use (one with a passphrase, which
the server does not have): like an unreachable cluster, never a crash of what uses it."""

import asyncio
import contextlib
import dataclasses
import subprocess
from pathlib import Path

import pytest

from server.app import create_app
from server.config import ClusterConfig
from server.keys import POOL, SLURM
from server.runner.slurm.reconcile import Reconciler
from tests.helpers import (
    eventually,
    job_dir_of,
    logfiles_of,
    login,
    payload,
    states_are,
    status,
    submit,
)


@pytest.fixture
def locked_key_cluster(tmp_path: Path) -> ClusterConfig:
    key = tmp_path / "id_ed25519"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "passphrase", "-f", str(key)]
    subprocess.run(argv, check=True, capture_output=True)
    return ClusterConfig(
        "hpc", "HPC", host="127.0.0.1", port=9, user="yaptide", key_file=str(key), work_dir="/w"
    )


async def test_the_submission_fails_with_the_reason(
    aiohttp_client, make_config, conn, locked_key_cluster, caplog
) -> None:
    """Its user reads the kind of failure, the operator the details (a failed login names the
    cluster's account and host, which GET /clusters keeps to the server)."""
    config = make_config(slurm={"local_users": True})
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, clusters=(locked_key_cluster,)))
    )
    await login(client)
    response = await client.post("/jobs/batch", json=payload(batch_options={"cluster_name": "hpc"}))
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    await eventually(states_are(client, job_id, "FAILED"))
    assert (await logfiles_of(conn))["slurm"] == (
        "The job could not be sent to SLURM: hpc: cannot connect: KeyImportError (see the "
        "server's log)"
    )
    assert "Passphrase must be specified to import encrypted private keys" in caplog.text


async def test_a_missing_key_file_is_named_in_the_servers_log_only(
    aiohttp_client, make_config, conn, locked_key_cluster, caplog
) -> None:
    """The job's log is its user's: the operator's key file was named there."""
    cluster = dataclasses.replace(locked_key_cluster, key_file="/etc/yaptide/no-such-key")
    config = make_config(slurm={"local_users": True})
    client = await aiohttp_client(create_app(dataclasses.replace(config, clusters=(cluster,))))
    await login(client)
    response = await client.post("/jobs/batch", json=payload(batch_options={"cluster_name": "hpc"}))
    job_id = (await response.json())["job_id"]
    await eventually(states_are(client, job_id, "FAILED"))
    assert (await logfiles_of(conn))["slurm"] == (
        "The job could not be sent to SLURM: hpc: cannot connect: No such file or directory "
        "(see the server's log)"
    )
    assert "/etc/yaptide/no-such-key" in caplog.text


async def test_the_sweep_of_runner_work_dir_goes_on(
    aiohttp_client, make_config, conn, locked_key_cluster
) -> None:
    """Here the sweep runs every job_dir_ttl seconds: it goes on although the cluster's part
    of it cannot log in."""
    config = make_config(runner={"job_dir_ttl": 0.2})
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, clusters=(locked_key_cluster,)))
    )
    await login(client)
    await asyncio.sleep(0.5)  # the first sweeps ran
    ended = await submit(client)
    await conn.execute(
        "UPDATE simulations SET job_state = 'COMPLETED', end_time = now() - interval '1 hour'"
    )
    job_dir = job_dir_of(config, ended)
    job_dir.mkdir(parents=True)

    async def swept() -> bool:
        return not job_dir.exists()

    await eventually(swept, timeout=5)


async def test_the_reconciler_goes_on_with_the_other_clusters(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch, locked_key_cluster
) -> None:
    """A job on "hpc" (sent before its key was replaced) must not keep the reconciler from
    the jobs of another cluster, whose SLURM has forgotten them (its squeue prints nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    other = ClusterConfig("other", "Other", work_dir=str(tmp_path / "other"))
    config = make_config(slurm={"poll_interval": 3600.0})
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, clusters=(locked_key_cluster, other)))
    )
    await login(client)
    sent = {"hpc": await submit(client), "other": await submit(client)}
    for name, job_id in sent.items():
        await conn.execute(
            "INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, "
            "merge_job_id) SELECT id, $2, '/w/' || job_id, 101, 102 FROM simulations "
            "WHERE job_id = $1",
            job_id,
            name,
        )
    app = client.server.app
    with contextlib.suppress(Exception):  # the reconciler's loop logs a failed poll
        url = config.database.url
        await Reconciler(app[SLURM], app[POOL], url, 3600.0, direct=False).poll()
    assert (await status(client, sent["hpc"]))["job_state"] == "PENDING"  # nothing known
    assert (await status(client, sent["other"]))["job_state"] == "FAILED"
