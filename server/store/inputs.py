"""The inputs table: a simulation's submitted input and the files converted from it, as
zlib-compressed JSON, and the bytes they take uncompressed once written to a job directory."""

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import orjson

from server.database.sql import query
from server.models import Conn, Db


class StoredInput(NamedTuple):
    input_type: str
    data: bytes  # the submitted input as JSON
    files: bytes | None  # the converted input files as JSON, if any


def _serialised(data: dict[str, Any]) -> bytes:
    """`data` as JSON, written inside two lists: the UI dialect's `GET /inputs` sends an input two
    levels down (`{"input": {"input_json": ...}}`) and orjson writes at most 254 levels, so an
    input too deep for that answer raises orjson.JSONEncodeError here, at submission."""
    return orjson.dumps([[data]])[2:-2]


def _pack(value: dict[str, Any]) -> bytes:
    return zlib.compress(orjson.dumps(value))


def _text_size(files: dict[str, str]) -> int:
    return sum(len(text.encode()) for text in files.values())


def _disk_size(
    input_type: str, raw_data: bytes, data: dict[str, Any], files: dict[str, str] | None
) -> int:
    """The bytes the runner writes into a job directory's `input/` for this input, as
    runner/local/jobfiles.py (_files) and runner/slurm/sbatch.py (input_files) do: the
    converted files, or else an editor project as input.json (`raw_data`, for an operator's
    converter), or else the submitted files, each as UTF-8 text."""
    if files:
        return _text_size(files)
    return len(raw_data) if input_type == "editor" else _text_size(data)


class PackedInput(NamedTuple):
    data: bytes  # the submitted input, compressed
    files: bytes | None  # the converted input files, compressed
    disk_size: int  # the bytes they take uncompressed in a job directory


def compress_input(
    input_type: str, data: dict[str, Any], files: dict[str, str] | None
) -> PackedInput:
    raw = _serialised(data)
    packed_files = None if files is None else _pack(files)
    return PackedInput(zlib.compress(raw), packed_files, _disk_size(input_type, raw, data, files))


async def pack(
    input_type: str, data: dict[str, Any], files: dict[str, str] | None = None
) -> PackedInput:
    """The input compressed, with the size it takes uncompressed in a job directory; in a
    thread: tens of MiB of input files take a second or more to compress, which on the event
    loop would hold up every other request of the process."""
    return await asyncio.to_thread(compress_input, input_type, data, files)


async def insert(conn: Conn, sim_pk: int, packed: PackedInput) -> None:
    """Store an input made by `pack`."""
    await conn.execute(query("insert_input"), sim_pk, *packed)


async def get(db: Db, sim_pk: int) -> StoredInput | None:
    row = await db.fetchrow(query("get_simulation_input"), sim_pk)
    if row is None:
        return None
    return await asyncio.to_thread(_unpacked, row["input_type"], row["data"], row["files"])


def _unpacked(input_type: str, data: bytes, files: bytes | None) -> StoredInput:
    """Decompressed (in a thread, like `pack`: tens of MiB take a fraction of a second)."""
    return StoredInput(
        input_type, zlib.decompress(data), None if files is None else zlib.decompress(files)
    )


class InputSizes(NamedTuple):
    input_type: str
    data_size: int  # compressed bytes of the submitted input
    files_size: int | None  # compressed bytes of the converted files, if any
    data: bytes | None  # the submitted input, compressed, when small enough to be read whole
    files: bytes | None  # the converted files, likewise


class InputGone(Exception):
    """The simulation was deleted while its input was read a slice at a time."""


SLICE = 1 << 20  # compressed bytes read at a time, and most inflated bytes given at a time


async def get_small(db: Db, sim_pk: int, most: int) -> InputSizes | None:
    """The input's sizes, and its compressed columns when they take `most` bytes or less."""
    row = await db.fetchrow(query("get_small_input"), sim_pk, most)
    if row is None:
        return None
    return InputSizes(*row)


def inflated_within(found: InputSizes, most: int) -> StoredInput | None:
    """The input read whole (`get_small`) inflated, or None when it inflates to more than
    `most` bytes (a compressed MiB may hold a gigabyte): then it is streamed (`inflated`)."""
    if found.data is None:
        return None
    data = _inflated_within(found.data, most)
    files = None if found.files is None else _inflated_within(found.files, most)
    if data is None or (found.files is not None and files is None):
        return None
    return StoredInput(found.input_type, data, files)


def _inflated_within(packed: bytes, most: int) -> bytes | None:
    inflater = zlib.decompressobj()
    out = inflater.decompress(packed, most + 1)
    return None if len(out) > most else out + inflater.flush()


async def inflated(
    db: Db, sim_pk: int, column: str, size: int, packed: bytes | None = None
) -> AsyncIterator[bytes]:
    """The JSON of the input's `column` ("data" or "files", `size` compressed bytes: `packed`
    when it was read whole, else read SLICE bytes at a time), given SLICE bytes at a time at
    most; InputGone once the simulation is deleted."""
    inflater = zlib.decompressobj()
    for start in range(0, size, SLICE):
        if packed is None:
            piece = await _slice(db, sim_pk, column, start)
        else:
            piece = packed[start : start + SLICE]
        while piece:
            if out := inflater.decompress(piece, SLICE):
                yield out
            piece = inflater.unconsumed_tail
    if rest := inflater.flush():
        yield rest


async def _slice(db: Db, sim_pk: int, column: str, start: int) -> bytes:
    sql = query("input_slice_files") if column == "files" else query("input_slice_data")
    piece: bytes | None = await db.fetchval(sql, sim_pk, start + 1, SLICE)
    if piece is None:
        raise InputGone
    return piece


async def for_workers(db: Db, job_id: str) -> dict[str, Any] | None:
    """What the workers of `job_id` are given (runner.Job.input): the files converted from its
    editor project, or else its submitted input; None when the simulation is gone."""
    packed = await db.fetchval(query("get_job_input"), job_id)
    if packed is None:
        return None
    loaded: dict[str, Any] = await asyncio.to_thread(lambda: orjson.loads(zlib.decompress(packed)))
    return loaded
