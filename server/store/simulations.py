"""Simulations: creation with inputs and tasks, ownership lookups."""

import zlib

import asyncpg
import orjson

from server.models import Db
from server.sql import query


async def create(
    pool: asyncpg.Pool,
    *,
    job_id: str,
    user_id: int,
    title: str,
    sim_type: str,
    input_type: str,
    primaries: list[int],
    input_data: dict,
    update_key_sha256: bytes,
) -> int:
    """Insert a simulation, its input and one PENDING task per entry of `primaries`, atomically."""
    stored_input = zlib.compress(orjson.dumps(input_data))
    async with pool.acquire() as conn, conn.transaction():
        simulation_id = await conn.fetchval(
            query("insert_simulation"),
            job_id,
            user_id,
            title,
            sim_type,
            input_type,
            len(primaries),
            update_key_sha256,
        )
        await conn.execute(query("insert_input"), simulation_id, stored_input)
        await conn.execute(query("insert_tasks"), simulation_id, primaries)
    return simulation_id


async def get_owner(db: Db, job_id: str) -> tuple[int, int] | None:
    """(simulation id, owner's user id) of a job, or None."""
    row = await db.fetchrow(query("get_simulation_owner"), job_id)
    return (row["id"], row["user_id"]) if row else None


async def live_update_key_exists(db: Db, key_sha256: bytes) -> bool:
    return bool(await db.fetchval(query("live_update_key_exists"), key_sha256))
