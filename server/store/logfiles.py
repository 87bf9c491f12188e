"""The logfiles table: log files of a simulation, stored by name in parts of PART characters."""

from collections.abc import AsyncIterator
from typing import NamedTuple

from server.models import Db
from server.sql import query

BATCH_BYTES = 4 << 20  # log contents read at once: a simulation may hold hundreds of MB of logs
PART = 1 << 20  # characters of a log file in one row (migration 0017)


class Part(NamedTuple):
    name: str
    part: int  # 0, 1, ... in the file's order
    content: str
    written_by: str  # the transaction that stored it: the same for every part of a file


class LogsChanged(Exception):
    """A log file was replaced or removed while it was being read."""


async def upsert(db: Db, sim_pk: int, logfiles: dict[str, str]) -> None:
    """Store each named log file in parts, replacing one of the same name stored before (in the
    caller's transaction: the file changes at once)."""
    names, parts, contents = [], [], []
    for name, text in logfiles.items():
        for number, start in enumerate(range(0, max(len(text), 1), PART)):
            names.append(name)
            parts.append(number)
            contents.append(text[start : start + PART])
    await db.execute(query("delete_logfiles_named"), sim_pk, list(logfiles))
    await db.execute(query("insert_logfile_parts"), sim_pk, names, parts, contents)


async def read_batches(db: Db, sim_pk: int) -> AsyncIterator[list[Part]]:
    """The parts of the simulation's log files, by name and part, about BATCH_BYTES at a time;
    a batch of none is not given. LogsChanged when a part listed is gone, or a file's parts
    were not all stored together (it was replaced between two batches)."""
    batch: list[tuple[str, int]] = []
    size, writers = 0, dict[str, str]()
    listing = await db.fetch(query("list_simulation_logfiles"), sim_pk)
    for name, part, length in listing:
        if batch and size + length > BATCH_BYTES:
            yield await _fetch(db, sim_pk, batch, writers)
            batch, size = [], 0
        batch.append((name, part))
        size += length
    if batch:
        yield await _fetch(db, sim_pk, batch, writers)


async def _fetch(
    db: Db, sim_pk: int, keys: list[tuple[str, int]], writers: dict[str, str]
) -> list[Part]:
    names, numbers = [name for name, _ in keys], [part for _, part in keys]
    found = [
        Part(*row) for row in await db.fetch(query("get_logfile_parts"), sim_pk, names, numbers)
    ]
    if len(found) != len(keys):
        raise LogsChanged("log files were removed while they were read")
    for part in found:
        if writers.setdefault(part.name, part.written_by) != part.written_by:
            raise LogsChanged(f"log file {part.name} was replaced while it was read")
    return found
