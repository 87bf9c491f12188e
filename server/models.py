"""Small value types shared by handlers, middleware, jobs, results and store functions: the store
imports nothing from the layers above it."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection: a plain one, or one borrowed from the pool (a proxy with the same methods).
Conn = asyncpg.Connection | PoolConnectionProxy
# A store function runs on the pool (one statement) or on a connection inside a transaction.
Db = asyncpg.Pool | Conn


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    source: str
    token_generation: int  # access tokens of another generation are refused (auth.py)
    # Live sessions (refresh tokens), by the session id their access tokens carry: an access
    # token of another session was logged out (auth.py). Read only for the access check.
    sessions: frozenset[str] = frozenset()


# OFFSET is a bigint: a page far beyond any stored row is simply empty.
_MAX_OFFSET = 2**62


@dataclass(frozen=True)
class Listing:
    """`GET /user/simulations`' paging, sort order and state filter (server/jobs/listing.py)."""

    page_size: int = 6
    page_idx: int = 1
    order_by: str = "start_time"
    descending: bool = True
    states: tuple[str, ...] | None = None  # None: every state

    @property
    def offset(self) -> int:
        return min((self.page_idx - 1) * self.page_size, _MAX_OFFSET)

    def page_count(self, total: int) -> int:
        return -(-total // self.page_size)


@dataclass(frozen=True)
class TaskUpdate:
    """A validated update_dict of `POST /tasks` (server/jobs/reports.py); None: not sent."""

    task_state: str | None = None
    simulated_primaries: int | None = None
    requested_primaries: int | None = None
    estimated_time: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    def fields(self) -> dict[str, Any]:
        """Everything but the state, as keyword arguments for store.tasks.update."""
        return {
            "simulated_primaries": self.simulated_primaries,
            "requested_primaries": self.requested_primaries,
            "estimated_time": self.estimated_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


@dataclass(frozen=True, slots=True)
class StoredPage:
    page_number: int
    name: str
    dimensions: list[int]
    data: bytes  # joinable raw deflate segment of the serialised page
    crc32: int
    crc_shift: int
    raw_size: int


@dataclass(frozen=True, slots=True)
class StoredEstimator:
    name: str
    pages: list[StoredPage]
    fields: bytes = b""  # its other members, serialised: b'"metadata":{...}' (or empty)
