"""Small value types shared by handlers, middleware and store functions."""

from dataclasses import dataclass

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
