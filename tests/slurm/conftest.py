"""Fixtures of the SLURM tests: one real single-node SLURM cluster and one sshd per session.

The cluster (tests/slurm/cluster.py) and the sshd (tests/slurm/sshd.py) need root and the
Debian packages that tests/slurm/install.sh installs: the session installs them when they are
missing (so the README's test command alone runs these tests on a fresh machine); only a run
without root skips them, with the reason. Client commands find the cluster through SLURM_CONF, set in
this process's environment for the session (the server runs sbatch with its environment).
"""

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import PROJECT_DIR, ClusterConfig, Config
from tests.fakes.simulators import fake_shieldhit
from tests.helpers import RecordingDispatcher, login, record_jobs
from tests.slurm.batch import ssh_cluster
from tests.slurm.cluster import Cluster, installed
from tests.slurm.sshd import SshServer, ssh_server


@pytest.fixture(scope="session")
def slurm_root() -> Iterator[Path]:
    """A directory every test user can reach (not pytest's 0700 tmp tree)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to run SLURM's daemons and an sshd)")
    if not installed():
        subprocess.run([str(Path(__file__).with_name("install.sh"))], check=True)
    directory = Path(tempfile.mkdtemp(prefix="yaptide-slurm-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster(slurm_root: Path) -> Iterator[Cluster]:
    cluster = Cluster(slurm_root / "cluster")
    previous = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def ssh(slurm_root: Path, slurm_cluster: Cluster) -> Iterator[SshServer]:
    with ssh_server(slurm_root / "ssh", slurm_cluster.conf) as server:
        yield server


def _runs_worker(user: str, command: str) -> bool:
    check = f"{command} -c 'import server.worker.main, pymchelper'"
    done = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", check], capture_output=True)
    return done.returncode == 0


@pytest.fixture(scope="session")
def remote_python(ssh: SshServer) -> str:
    """How the SSH user runs the worker: this interpreter if the user can reach it, else the
    system Python of the same version with this project and its packages on PYTHONPATH."""
    candidates = [shlex.quote(sys.executable)]
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"), None)
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if site is not None and Path(system).exists():
        candidates.append(f"env PYTHONPATH={PROJECT_DIR}:{site} {system}")
    for command in candidates:
        if _runs_worker(ssh.user, command):
            return command
    pytest.skip(f"the SSH test user cannot run the worker with any of {candidates}")


@pytest.fixture
def job_root(slurm_root: Path, tmp_path: Path) -> Path:
    """A per-test directory on the "shared filesystem" (reachable by every test user)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{tmp_path.name[:20]}-", dir=slurm_root))
    directory.chmod(0o777)
    return directory


@pytest.fixture
def start_slurm_app(
    aiohttp_server: Callable,
    aiohttp_client: Callable,
    unused_tcp_port_factory: Callable[[], int],
    make_config: Callable[..., Config],
    slurm_cluster: Cluster,
    conn: Any,
) -> Iterator[Callable[..., Any]]:
    """start_slurm_app(shieldhit, **sections) -> (client, recorder, config): an app on a real
    port with runner.kind = "slurm" (progress every 0.1 s, the reconciler every 0.3 s), its
    client logged in as a new user alice (new_user=True), as the existing alice (False), or
    not at all (None)."""

    async def start(
        shieldhit: Path,
        port: int | None = None,
        new_user: bool | None = True,
        clusters: tuple[ClusterConfig, ...] = (),
        **sections: dict[str, Any],
    ) -> tuple[TestClient, RecordingDispatcher, Config]:
        port = port or unused_tcp_port_factory()
        settings: dict[str, dict[str, Any]] = {
            "server": {"public_url": f"http://127.0.0.1:{port}"},
            "runner": {"kind": "slurm", "progress_interval": 0.1, "retry_timeout": 20.0},
            "slurm": {"poll_interval": 0.3, "jobcomp_file": str(slurm_cluster.jobcomp)},
            "simulators": {"shieldhit": str(shieldhit)},
        }
        for name, values in sections.items():
            settings[name] = {**settings.get(name, {}), **values}
        config = dataclasses.replace(make_config(**settings), clusters=clusters)
        app = create_app(config)
        recorder = record_jobs(app)
        client = await aiohttp_client(await aiohttp_server(app, port=port))
        if new_user:
            await login(client)
        elif new_user is False:
            credentials = {"username": "alice", "password": "password1"}
            assert (await client.post("/auth/login", json=credentials)).status == 202
        return client, recorder, config

    yield start
    # A job left behind would retry its reports to a server that is gone, holding a CPU.
    slurm_cluster.cancel_all()


@pytest.fixture
def start_batch_app(start_slurm_app, ssh, remote_python, job_root):
    """start_batch_app(local_users=True, locked_options="", **fake) -> (client, recorder,
    config): external workers for direct jobs, the SSH cluster `hpc` for batch ones."""

    async def start(local_users: bool = True, locked_options: str = "", **fake: object):
        shieldhit = fake_shieldhit(job_root, python=remote_python, **fake)
        cluster = ssh_cluster(ssh, job_root / "remote", remote_python)
        cluster = dataclasses.replace(cluster, locked_options=locked_options)
        return await start_slurm_app(
            shieldhit,
            clusters=(cluster,),
            runner={"kind": "none"},
            slurm={"local_users": local_users},
        )

    return start


@pytest.fixture
def held_partition(slurm_cluster: Cluster):
    """A partition of the test cluster that takes jobs and runs none (State=DOWN)."""
    name = f"held{uuid.uuid4().hex[:8]}"
    nodes = f"Nodes={slurm_cluster.host}"
    slurm_cluster.command("scontrol", "create", f"PartitionName={name}", nodes, "State=DOWN")
    yield name
    slurm_cluster.command("scancel", f"--partition={name}", check=False)
    slurm_cluster.command("scontrol", "delete", f"PartitionName={name}", check=False)
