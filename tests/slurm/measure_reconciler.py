"""Measures the reconciler's cost per poll with 1,000 tracked array tasks (needs root + SLURM).

    .venv/bin/python -m tests.slurm.measure_reconciler [--simulations 10] [--tasks 100]

Everything is real: the single-node test cluster (tests/slurm/cluster.py), an embedded
PostgreSQL with the migrations, simulations stored by the store functions and submitted by the
SLURM dispatcher with real sbatch, and Reconciler.poll() with real squeue. The one thing faked
is the cluster's size: a 2-CPU node cannot run 1,000 tasks, so the jobs are submitted held
(`[slurm] sbatch_lines = "#SBATCH --hold"`) and stay PENDING, which squeue lists one line per
array task like running ones. Prints the wall and CPU time per poll, and squeue's own cost
(text form, and --json for comparison).
"""

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from server.config import Config
from server.database import db
from server.database.embedded import embedded_postgres
from server.jobs import transitions
from server.runner import Job
from server.runner.slurm.dispatcher import SlurmDispatcher
from server.runner.slurm.reconcile import Reconciler
from server.runner.slurm.sbatch import SQUEUE_COMMAND
from server.store import slurm_jobs, users
from tests.slurm.cluster import Cluster


async def submit_all(config: Config, pool: asyncpg.Pool, count: int, ntasks: int) -> None:
    user_id = await users.create(pool, "measure", "not-a-hash")
    dispatcher = SlurmDispatcher(config, pool)
    for number in range(count):
        job_id = f"measure-{number:04d}-0000-0000-000000000000"
        key = f"key-{number}"
        primaries = [100] * ntasks
        await transitions.create_simulation(
            pool,
            job_id=job_id,
            user_id=user_id,
            title="measure",
            sim_type="shieldhit",
            input_type="files",
            primaries=primaries,
            input_data={"beam.dat": "NSTAT 100\n"},
            update_key_sha256=hashlib.sha256(key.encode()).digest(),
        )
        job = Job(job_id, "shieldhit", "files", ntasks, tuple(primaries), key, {"beam.dat": ""})
        await dispatcher.submit(job)
    await sent(pool, count)
    await dispatcher.close()


async def sent(pool: asyncpg.Pool, count: int) -> None:
    """Wait for the dispatcher's submissions (in the background) to store their SLURM ids."""
    deadline = time.monotonic() + 300
    while (stored := await pool.fetchval("SELECT count(*) FROM slurm_jobs")) < count:
        failed = await pool.fetchval("SELECT count(*) FROM logfiles WHERE name = 'slurm'")
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"{stored} of {count} simulations reached SLURM, {failed} failed")
        await asyncio.sleep(0.1)


def timed(argv: str, env: dict[str, str], runs: int = 10) -> tuple[float, int]:
    """Median wall seconds of a shell command and its output size."""
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(argv, shell=True, env=env, capture_output=True, check=True).stdout
        times.append(time.perf_counter() - start)
        size = len(out)
    return statistics.median(times), size


async def measure(config: Config, pool: asyncpg.Pool, polls: int) -> tuple[float, float]:
    dispatcher = SlurmDispatcher(config, pool)
    reconciler = Reconciler(dispatcher, pool, config.database.url, interval=1.0, direct=True)
    walls, cpus = [], []
    for _ in range(polls):
        wall, cpu = time.perf_counter(), time.process_time()
        await reconciler.poll()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    await dispatcher.close()
    return statistics.median(walls), statistics.median(cpus)


async def run(directory: Path, url: str, cluster: Cluster, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(url)
    await db.migrate(conn)
    await conn.close()
    config = Config().replace("database", url=url, data_dir=str(directory / "data"))
    config = config.replace("runner", kind="slurm", work_dir=str(directory / "jobs"))
    config = config.replace("slurm", sbatch_lines="#SBATCH --hold")
    async with asyncpg.create_pool(url) as pool:
        await submit_all(config, pool, args.simulations, args.tasks)
        watched = await slurm_jobs.list_watched(pool)
        tracked = sum(len(item.open_tasks) for item in watched)
        lines = cluster.command("sh", "-c", SQUEUE_COMMAND).count("\n")
        print(
            f"tracked: {len(watched)} simulations, {tracked} open array tasks; squeue: {lines} lines"
        )
        wall, cpu = await measure(config, pool, args.polls)
        text = timed(SQUEUE_COMMAND, cluster.env)
        json = timed("squeue --json", cluster.env)
        failed = await pool.fetchval("SELECT count(*) FROM tasks WHERE task_state <> 'PENDING'")
    print(
        f"reconciler poll (median of {args.polls}): {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU in the server"
    )
    print(f"  squeue text form: {text[0] * 1000:.1f} ms, {text[1]} bytes")
    print(f"  squeue --json (not used): {json[0] * 1000:.1f} ms, {json[1]} bytes")
    print(f"tasks changed by the polls: {failed} (expected 0: every task is PENDING in SLURM)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yaptide-measure-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        cluster = Cluster(directory / "cluster")
        try:
            cluster.start()
            os.environ["SLURM_CONF"] = str(cluster.conf)
            with embedded_postgres(directory / "postgres") as url:
                asyncio.run(run(directory, url, cluster, args))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
