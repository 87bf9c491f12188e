"""The inputs table: a simulation's submitted input and the files converted from it, as
zlib-compressed JSON."""

import zlib
from typing import Any, NamedTuple

import orjson

from server.models import Conn, Db
from server.sql import query


class StoredInput(NamedTuple):
    input_type: str
    data: bytes  # the submitted input as JSON
    files: bytes | None  # the converted input files as JSON, if any


def _pack(value: dict[str, Any]) -> bytes:
    return zlib.compress(orjson.dumps(value))


async def insert(
    conn: Conn, sim_pk: int, data: dict[str, Any], files: dict[str, str] | None = None
) -> None:
    packed_files = None if files is None else _pack(files)
    await conn.execute(query("insert_input"), sim_pk, _pack(data), packed_files)


async def get(db: Db, sim_pk: int) -> StoredInput | None:
    row = await db.fetchrow(query("get_simulation_input"), sim_pk)
    if row is None:
        return None
    files = None if row["files"] is None else zlib.decompress(row["files"])
    return StoredInput(row["input_type"], zlib.decompress(row["data"]), files)


async def for_workers(db: Db, job_id: str) -> dict[str, Any] | None:
    """What the workers of `job_id` are given (runner.Job.input): the files converted from its
    editor project, or else its submitted input; None when the simulation is gone."""
    packed = await db.fetchval(query("get_job_input"), job_id)
    return None if packed is None else orjson.loads(zlib.decompress(packed))
