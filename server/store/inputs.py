"""The inputs table: a simulation's submitted input, as zlib-compressed JSON."""

import zlib
from typing import Any

import orjson

from server.models import Conn, Db
from server.sql import query


async def insert(conn: Conn, sim_pk: int, data: dict[str, Any]) -> None:
    await conn.execute(query("insert_input"), sim_pk, zlib.compress(orjson.dumps(data)))


async def get(db: Db, sim_pk: int) -> tuple[str, bytes] | None:
    """(input_type, the submitted input as JSON bytes), or None."""
    row = await db.fetchrow(query("get_simulation_input"), sim_pk)
    return (row["input_type"], zlib.decompress(row["data"])) if row else None
