"""Small value types shared by handlers, middleware and store functions."""

from dataclasses import dataclass

import asyncpg

# A store function runs on the pool (one statement) or on a connection inside a transaction.
Db = asyncpg.Pool | asyncpg.Connection

JOB_STATES = (
    "UNKNOWN",
    "PENDING",
    "RUNNING",
    "MERGING_QUEUED",
    "MERGING_RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELED",
)
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    source: str
