"""The clusters a SLURM dispatcher sends simulations to: this host's own SLURM (a login node,
from [slurm]) and the [[clusters]] entries, each with where its job directories go."""

import dataclasses

from server.config import ClusterConfig, Config
from server.runner.local import process as proc

LOGIN_NODE = ""  # the cluster name of this host's own SLURM


def login_node_cluster(config: Config) -> ClusterConfig:
    """This host as a cluster: [slurm] settings, job directories under runner.work_dir."""
    settings = config.slurm
    return ClusterConfig(
        cluster_name=LOGIN_NODE,
        display_name="this host",
        work_dir=str(proc.work_dir(config)),
        python=settings.python,
        partition=settings.partition,
        account=settings.account,
        time_limit=settings.time_limit,
        sbatch_lines=settings.sbatch_lines,
        jobcomp_file=settings.jobcomp_file,
    )


def on_this_host(config: Config, cluster: ClusterConfig) -> ClusterConfig:
    """A [[clusters]] entry without a host is this host's SLURM: without a work_dir of its own,
    its job directories go under runner.work_dir (removed with their simulation, swept), never
    into the server's current directory."""
    if cluster.host or cluster.work_dir:
        return cluster
    return dataclasses.replace(cluster, work_dir=str(proc.work_dir(config)))
