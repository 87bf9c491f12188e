"""The inputs table: a simulation's submitted input and the files converted from it, as
zlib-compressed JSON, and the bytes they take uncompressed once written to a job directory."""

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


def _text_size(files: dict[str, str]) -> int:
    return sum(len(text.encode()) for text in files.values())


def _disk_size(
    input_type: str, raw_data: bytes, data: dict[str, Any], files: dict[str, str] | None
) -> int:
    """The bytes the runner writes into a job directory's `input/` for this input, as
    runner/process.py (_write_files) and runner/slurm/sbatch.py (input_files) do: the converted
    files, or else an editor project as input.json (`raw_data`, for an operator's converter),
    or else the submitted files, each as UTF-8 text."""
    if files:
        return _text_size(files)
    return len(raw_data) if input_type == "editor" else _text_size(data)


async def insert(
    conn: Conn,
    sim_pk: int,
    input_type: str,
    data: dict[str, Any],
    files: dict[str, str] | None = None,
) -> None:
    """Store the input compressed, with the size it takes uncompressed in a job directory."""
    raw = orjson.dumps(data)
    packed_files = None if files is None else _pack(files)
    size = _disk_size(input_type, raw, data, files)
    await conn.execute(query("insert_input"), sim_pk, zlib.compress(raw), packed_files, size)


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
