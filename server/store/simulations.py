"""The simulations table: creation, ownership, the job state, and a user's list of their own.

`sim_pk` is the table's integer key; `job_id` is the public text id of the API."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.database.sql import query
from server.models import Conn, Db, Listing


@dataclass(frozen=True, slots=True)
class Owner:
    sim_pk: int
    user_id: int


@dataclass(frozen=True, slots=True)
class Locked:
    """A simulation row locked for a worker write: what the key and state checks need."""

    sim_pk: int
    job_state: str
    update_key_sha256: bytes


async def insert(
    conn: Conn,
    job_id: str,
    user_id: int,
    title: str,
    sim_type: str,
    input_type: str,
    ntasks: int,
    update_key_sha256: bytes,
    platform: str,
    local_runner: bool,
    to_slurm: bool = False,
) -> int:
    """The new simulation's sim_pk (`local_runner`: the local runner runs it; `to_slurm`: a
    server sends it to SLURM, leased until then)."""
    sim_pk: int = await conn.fetchval(
        query("insert_simulation"),
        job_id,
        user_id,
        title,
        sim_type,
        input_type,
        ntasks,
        update_key_sha256,
        platform,
        local_runner,
        to_slurm,
    )
    return sim_pk


async def get_owner(db: Db, job_id: str) -> Owner | None:
    row = await db.fetchrow(query("get_simulation_owner"), job_id)
    return Owner(row["id"], row["user_id"]) if row else None


async def lock(conn: Conn, job_id: str) -> Locked | None:
    """Lock the simulation row for the rest of the transaction."""
    row = await conn.fetchrow(query("lock_simulation_for_worker"), job_id)
    return Locked(row["id"], row["job_state"], row["update_key_sha256"]) if row else None


async def recompute_state(conn: Conn, sim_pk: int) -> str:
    """Set and return the job state its tasks and results justify (under the row lock)."""
    state: str = await conn.fetchval(query("recompute_job_state"), sim_pk)
    return state


async def set_state(conn: Conn, sim_pk: int, state: str) -> None:
    """Set a job state directly (cancel, POST /jobs, recovery); end_time once terminal."""
    await conn.execute(query("set_job_state"), sim_pk, state)


@dataclass(frozen=True, slots=True)
class ResultsHead:
    """What decides whether a held results index is current: owner, state, results version."""

    sim_pk: int
    user_id: int
    job_state: str
    end_time: datetime | None
    results_version: int  # changes with every results upload


def results_head_of(row: asyncpg.Record) -> ResultsHead:
    return ResultsHead(
        row["id"], row["user_id"], row["job_state"], row["end_time"], row["results_version"]
    )


async def get_results_heads(db: Db, job_ids: list[str]) -> dict[str, ResultsHead]:
    """The heads of those of `job_ids` that exist."""
    rows = await db.fetch(query("get_results_heads"), job_ids)
    return {row["job_id"]: results_head_of(row) for row in rows}


async def bump_results_version(conn: Conn, sim_pk: int) -> None:
    """Mark the simulation's results as changed (inside the upload transaction)."""
    await conn.execute(query("bump_results_version"), sim_pk)


async def get_state(db: Db, job_id: str) -> str | None:
    state: str | None = await db.fetchval(query("get_job_state"), job_id)
    return state


async def list_interrupted(db: Db, before: datetime) -> list[tuple[str, bool]]:
    """(job_id, unknown) of the local runner's unfinished simulations submitted before `before`;
    unknown: stored before its runner was recorded (migration 0019), maybe an external worker's."""
    rows = await db.fetch(query("list_interrupted_jobs"), before)
    return [(row["job_id"], row["unknown"]) for row in rows]


async def list_page(db: Db, user_id: int, listing: Listing) -> list[asyncpg.Record]:
    """The rows of one page, each with `total` (matching simulations); [] past the last page."""
    return await db.fetch(
        query("list_user_simulations"),
        user_id,
        listing.states,
        listing.order_by,
        listing.descending,
        listing.page_size,
        listing.offset,
    )


async def count_for_user(db: Db, user_id: int, states: tuple[str, ...] | None) -> int:
    count: int = await db.fetchval(query("count_user_simulations"), user_id, states)
    return count


async def count_unfinished(db: Db, user_id: int, limit: int) -> int:
    """The user's simulations not ended yet, counted up to `limit`."""
    count: int = await db.fetchval(query("count_unfinished_simulations"), user_id, limit)
    return count


async def delete_if_terminal(db: Db, sim_pk: int) -> tuple[bool, str | None]:
    """(deleted, state seen): not deleted with a state when it is not terminal, None if gone."""
    row = await db.fetchrow(query("delete_terminal_simulation"), sim_pk)
    assert row is not None  # the query always returns one row
    return row["deleted"], row["job_state"]


async def rotate_update_key(db: Db, job_id: str, update_key_sha256: bytes) -> bool:
    """Replace the key's digest of an unfinished direct simulation; False if none such exists."""
    return await db.fetchval(query("rotate_update_key"), job_id, update_key_sha256) is not None


async def update_key_state(db: Db, key_sha256: bytes) -> str | None:
    """The state of the simulation holding a key (a live one first); None when none does."""
    state: str | None = await db.fetchval(query("update_key_state"), key_sha256)
    return state


async def expired_job_ids(db: Db, job_ids: list[str], keep_seconds: float) -> list[str]:
    """Those of `job_ids` whose simulation was deleted, or ended over `keep_seconds` ago (when
    `keep_seconds` > 0); a job_id never ours is not."""
    return await _ended(db, job_ids, keep_seconds if keep_seconds > 0 else None)


async def ended_job_ids(db: Db, job_ids: list[str]) -> list[str]:
    """Those of `job_ids` whose simulation has ended or was deleted; a job_id never ours is
    not."""
    return await _ended(db, job_ids, 0.0)


async def _ended(db: Db, job_ids: list[str], seconds_ago: float | None) -> list[str]:
    rows = await db.fetch(query("ended_job_ids"), job_ids, seconds_ago)
    return [row["job_id"] for row in rows]


async def deleted_lately(db: Db, job_id: str, seconds: float) -> bool:
    """Whether the simulation `job_id` was deleted less than `seconds` ago."""
    return bool(await db.fetchval(query("deleted_lately"), job_id, seconds))


async def forget_deleted_job_ids(db: Db) -> None:
    """Drop the job_ids of simulations deleted over 30 days ago (every sweep has seen them)."""
    await db.execute(query("forget_deleted_job_ids"))


async def measure_simulation(conn: Conn, sim_pk: int) -> None:
    """Measure again what a simulation takes against the quota, after a write to it."""
    await conn.execute(query("measure_simulation"), sim_pk)


async def stored_bytes(conn: Conn, user_id: int) -> int:
    """Bytes of inputs, results and log files stored for the user's simulations, as measured
    by their last writes (measure_simulation)."""
    total: int = await conn.fetchval(query("stored_bytes"), user_id)
    return total
