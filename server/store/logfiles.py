"""Log files of a simulation, stored by name."""

from server.models import Db
from server.sql import query


async def upsert(db: Db, simulation_id: int, logfiles: dict[str, str]) -> None:
    """Store each named log file, replacing one of the same name stored before."""
    names = list(logfiles)
    await db.execute(query("upsert_logfiles"), simulation_id, names, [logfiles[n] for n in names])
