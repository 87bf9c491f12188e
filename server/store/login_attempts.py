"""The login_attempts table: recent login attempts per username and per client address."""

from datetime import datetime

from server.database.sql import query
from server.models import Conn, Db


async def claim(
    conn: Conn, keys: list[str], window: float
) -> tuple[dict[str, list[datetime]], datetime]:
    """Lock the keys' rows (in a transaction); their attempts within `window` seconds, oldest
    first, and the database's time now."""
    rows = await conn.fetch(query("claim_login_attempts"), keys, window)
    return {row["key"]: list(row["attempts"]) for row in rows}, rows[0]["now"]


async def add(conn: Conn, keys: list[str], moment: datetime) -> None:
    """Count an attempt made at `moment` for each of the claimed keys."""
    await conn.execute(query("add_login_attempt"), keys, moment)


async def forget_old(db: Db, window: float) -> None:
    """Drop the rows with no attempt within `window` seconds."""
    await db.execute(query("forget_login_attempts"), window)


async def take_back(db: Db, keys: list[str], moment: datetime) -> None:
    """The attempt made at `moment` no longer counts for the keys."""
    await db.execute(query("take_back_login_attempt"), keys, moment)
