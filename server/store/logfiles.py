"""The logfiles table: log files of a simulation, stored by name."""

from collections.abc import AsyncIterator

import asyncpg

from server.models import Db
from server.sql import query

BATCH_BYTES = 4 << 20  # log contents read at once: a simulation may hold hundreds of MB of logs


async def upsert(db: Db, sim_pk: int, logfiles: dict[str, str]) -> None:
    """Store each named log file, replacing one of the same name stored before."""
    names = list(logfiles)
    await db.execute(query("upsert_logfiles"), sim_pk, names, [logfiles[n] for n in names])


async def names(db: Db, sim_pk: int) -> list[tuple[str, int]]:
    """(name, bytes) of each stored log file, by name."""
    return [
        (row["name"], row["size"])
        for row in await db.fetch(query("list_simulation_logfiles"), sim_pk)
    ]


async def read_batches(db: Db, sim_pk: int) -> AsyncIterator[list[asyncpg.Record]]:
    """The (name, text) of the simulation's log files, by name, about BATCH_BYTES at a time (one
    larger file alone); a file gone meanwhile is left out, and a batch of none is not given."""
    batch: list[str] = []
    size = 0
    for name, length in await names(db, sim_pk):
        if batch and size + length > BATCH_BYTES:
            if rows := await db.fetch(query("get_logfiles_named"), sim_pk, batch):
                yield rows
            batch, size = [], 0
        batch.append(name)
        size += length
    if batch and (rows := await db.fetch(query("get_logfiles_named"), sim_pk, batch)):
        yield rows
