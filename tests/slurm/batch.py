"""The SSH cluster `hpc` of the batch tests (POST /jobs/batch over SSH to the real test SLURM):
its [[clusters]] entry, the batch options its simulations are sent with, and a look at their
SLURM jobs."""

from pathlib import Path

from server.config import ClusterConfig
from server.runner.slurm.sbatch import job_name
from tests.slurm.cluster import Cluster
from tests.slurm.sshd import SshServer

CLUSTER = {"cluster_name": "hpc", "display_name": "Test HPC (SSH)", "available": True}
OPTIONS = {
    "cluster_name": "hpc",
    "array_header": "#SBATCH --time=5\n#SBATCH --cpus-per-task=1\n",
    "array_options": {"--mem-per-cpu": "200M"},
    "collect_header": "",
    "collect_options": {"time": "00:05:00"},
}


def ssh_cluster(ssh: SshServer, work_dir: Path, python: str) -> ClusterConfig:
    return ClusterConfig(
        **CLUSTER,
        host=ssh.host,
        port=ssh.port,
        user=ssh.user,
        key_file=str(ssh.client_key),
        known_hosts=str(ssh.known_hosts),
        work_dir=str(work_dir),
        python=python,
    )


def jobs_named(cluster: Cluster, job_id: str) -> dict[str, str]:
    """{SLURM job: state} of a simulation's array tasks and merge job (named after it)."""
    text = cluster.command("squeue", "-h", "--array", "-t", "all", "-o", "%i|%j|%T")
    found = [line.split("|") for line in text.splitlines()]
    return {job: state for job, name, state in found if name.startswith(job_name(job_id))}
