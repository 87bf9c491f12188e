"""The logfiles table: log files of a simulation, stored by name."""

from server.models import Db
from server.sql import query


async def upsert(db: Db, sim_pk: int, logfiles: dict[str, str]) -> None:
    """Store each named log file, replacing one of the same name stored before."""
    names = list(logfiles)
    await db.execute(query("upsert_logfiles"), sim_pk, names, [logfiles[n] for n in names])


async def get_all(db: Db, sim_pk: int) -> dict[str, str]:
    """{name: text}, by name; empty when none are stored."""
    rows = await db.fetch(query("get_simulation_logfiles"), sim_pk)
    return {row["name"]: row["content"] for row in rows}
