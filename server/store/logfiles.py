"""The logfiles table: log files of a simulation, stored by name in parts of PART characters."""

from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

from server.database.sql import query
from server.models import Conn, Db

BATCH_BYTES = 4 << 20  # log contents read at once: a simulation may hold hundreds of MB of logs
PART = 1 << 20  # characters of a log file in one row (migration 0017)


class Pieces(list[str]):
    """A long log text as decoded a piece at a time (server/jobs/logsplit.py), never joined:
    its parts are cut across the pieces when it is stored."""


LogText = str | Pieces


class Part(NamedTuple):
    name: str
    part: int  # 0, 1, ... in the file's order
    content: str
    written_by: str  # the transaction that stored it: the same for every part of a file


class LogsChanged(Exception):
    """A log file was replaced or removed while it was being read."""


async def upsert(conn: Conn, sim_pk: int, logfiles: dict[str, LogText]) -> None:
    """Store each named log file in parts, replacing one of the same name stored before (in the
    caller's transaction, which holds the simulation's row lock: the file changes at once).
    Parts are sent about BATCH_BYTES at a time: 200 MB in one statement held the event loop
    for over a second while asyncpg encoded it."""
    await conn.execute(query("delete_logfiles_named"), sim_pk, list(logfiles))
    names: list[str] = []
    parts: list[int] = []
    contents: list[str] = []
    size = 0
    for name, text in logfiles.items():
        for number, content in enumerate(_parts(text)):
            names.append(name)
            parts.append(number)
            contents.append(content)
            size += len(content)
            if size >= BATCH_BYTES:
                await conn.execute(query("insert_logfile_parts"), sim_pk, names, parts, contents)
                names, parts, contents, size = [], [], [], 0
    if contents:
        await conn.execute(query("insert_logfile_parts"), sim_pk, names, parts, contents)


def _parts(text: LogText) -> Iterator[str]:
    """The text in parts of PART characters (one, maybe empty, at least)."""
    if isinstance(text, str):
        yield from (text[start : start + PART] for start in range(0, max(len(text), 1), PART))
        return
    held: list[str] = []
    size, made = 0, False
    for piece in text:
        start = 0
        while size + len(piece) - start >= PART:
            cut = start + PART - size
            yield "".join([*held, piece[start:cut]])
            held, size, made, start = [], 0, True, cut
        if start < len(piece):
            held.append(piece[start:])
            size += len(piece) - start
    if held or not made:
        yield "".join(held)


async def count(db: Db, sim_pk: int) -> int:
    """How many log files the simulation holds."""
    found: int = await db.fetchval(query("count_logfiles"), sim_pk)
    return found


async def read_batches(db: Db, sim_pk: int) -> AsyncIterator[list[Part]]:
    """The parts of the simulation's log files, by name and part, about BATCH_BYTES at a time;
    a batch of none is not given. LogsChanged when a part is not the one listed at the start
    (its file replaced or removed since: a file is never sent made of two)."""
    batch: list[tuple[str, int, str]] = []  # (name, part, written_by) as listed
    size = 0
    for name, part, length, written_by in await db.fetch(query("list_simulation_logfiles"), sim_pk):
        if batch and size + length > BATCH_BYTES:
            yield await _fetch(db, sim_pk, batch)
            batch, size = [], 0
        batch.append((name, part, written_by))
        size += length
    if batch:
        yield await _fetch(db, sim_pk, batch)


async def _fetch(db: Db, sim_pk: int, listed: list[tuple[str, int, str]]) -> list[Part]:
    names, numbers = [name for name, _, _ in listed], [part for _, part, _ in listed]
    rows = await db.fetch(query("get_logfile_parts"), sim_pk, names, numbers)
    found = [Part(*row) for row in rows]
    if [(part.name, part.part, part.written_by) for part in found] != listed:
        raise LogsChanged("log files were replaced or removed while they were read")
    return found
