"""The SLURM job ids stored per simulation (table slurm_jobs), and the cancels SLURM has not
confirmed yet (table pending_scancels)."""

from collections.abc import Sequence
from dataclasses import dataclass

from server.database.sql import query
from server.models import Conn, Db


@dataclass(frozen=True)
class SlurmJobs:
    cluster: str  # [[clusters]] name; "" for this host as a login node
    job_dir: str
    array_job_id: int
    merge_job_id: int


@dataclass(frozen=True)
class Watched:
    """A simulation the reconciler watches, and its tasks that have not ended."""

    sim_id: int
    job_id: str
    job_state: str
    jobs: SlurmJobs
    open_tasks: tuple[int, ...]


async def insert(db: Db, job_id: str, jobs: SlurmJobs) -> str | None:
    """Store the ids; the job state at that moment (None: the simulation is gone)."""
    state: str | None = await db.fetchval(
        query("insert_slurm_jobs"),
        job_id,
        jobs.cluster,
        jobs.job_dir,
        jobs.array_job_id,
        jobs.merge_job_id,
    )
    return state


async def get(db: Db, job_id: str) -> SlurmJobs | None:
    row = await db.fetchrow(query("get_slurm_jobs"), job_id)
    return SlurmJobs(**dict(row)) if row else None


async def list_watched(db: Db) -> list[Watched]:
    rows = await db.fetch(query("list_watched_slurm_jobs"))
    return [
        Watched(
            sim_id=row["id"],
            job_id=row["job_id"],
            job_state=row["job_state"],
            jobs=SlurmJobs(
                row["cluster"], row["job_dir"], row["array_job_id"], row["merge_job_id"]
            ),
            open_tasks=tuple(row["open_tasks"]),
        )
        for row in rows
    ]


async def set_done(db: Db, sim_id: int) -> None:
    await db.execute(query("set_slurm_jobs_done"), sim_id)


async def list_unsubmitted(db: Db, older_than: float) -> list[str]:
    """job_ids of unfinished simulations never sent to SLURM whose lease has not been renewed
    for `older_than` seconds."""
    rows = await db.fetch(query("list_unsubmitted"), older_than)
    return [row["job_id"] for row in rows]


async def unsubmitted(conn: Conn, sim_pk: int, older_than: float) -> bool:
    """list_unsubmitted's test for one simulation, asked again under its row lock."""
    return bool(await conn.fetchval(query("is_unsubmitted"), sim_pk, older_than))


async def renew_leases(db: Db, job_ids: list[str]) -> None:
    await db.execute(query("renew_slurm_leases"), job_ids)


async def remember_scancels(db: Db, cluster: str, job_ids: Sequence[int]) -> None:
    await db.execute(query("remember_scancels"), cluster, list(job_ids))


async def remember_cancelled_scancels(db: Db, sim_pk: int) -> None:
    """The simulation's SLURM jobs (if any) to cancel, written down with its CANCELED state."""
    await db.execute(query("remember_cancelled_scancels"), sim_pk)


async def forget_scancels(db: Db, cluster: str, job_ids: Sequence[int]) -> None:
    await db.execute(query("forget_scancels"), cluster, list(job_ids))


async def list_pending_scancels(db: Db) -> list[tuple[str, list[int]]]:
    """(cluster, SLURM job ids) of every cancel still to be done, by cluster."""
    rows = await db.fetch(query("list_pending_scancels"))
    return [(row["cluster"], list(row["job_ids"])) for row in rows]
