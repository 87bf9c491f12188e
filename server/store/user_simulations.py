"""A user's view of their own simulations: the paged list, deletion, inputs and log files."""

import zlib

import asyncpg

from server.listing import Listing
from server.models import Db
from server.sql import query


async def list_page(db: Db, user_id: int, listing: Listing) -> list[asyncpg.Record]:
    """The rows of one page, each with `total` (matching simulations); [] past the last page."""
    return await db.fetch(
        query("list_user_simulations"),
        user_id,
        listing.states,
        listing.order_by,
        listing.descending,
        listing.page_size,
        listing.offset,
    )


async def count(db: Db, user_id: int, states: tuple[str, ...] | None) -> int:
    return await db.fetchval(query("count_user_simulations"), user_id, states)


async def delete_if_terminal(db: Db, simulation_id: int) -> tuple[bool, str | None]:
    """(deleted, state seen): not deleted with a state when it is not terminal, None if gone."""
    row = await db.fetchrow(query("delete_terminal_simulation"), simulation_id)
    return row["deleted"], row["job_state"]


async def get_input(db: Db, simulation_id: int) -> tuple[str, bytes] | None:
    """(input_type, the submitted input as JSON bytes), or None."""
    row = await db.fetchrow(query("get_simulation_input"), simulation_id)
    return (row["input_type"], zlib.decompress(row["data"])) if row else None


async def get_logfiles(db: Db, simulation_id: int) -> dict[str, str]:
    """{name: text}, by name; empty when none are stored."""
    rows = await db.fetch(query("get_simulation_logfiles"), simulation_id)
    return {row["name"]: row["content"] for row in rows}
