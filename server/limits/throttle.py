"""Login throttling: attempts counted per username and per client address in a sliding window.

The counts are kept in the database (table login_attempts), so every server process (`--workers
N`) and every server of the database shares them: an attacker gets `auth.login_attempts`
guesses per username whichever process answers. An attempt is counted before its password is
checked (concurrent guesses count too: a key's row is locked while it is counted); a successful
login takes its own attempt back, so a user who types the password right is never held up by
their own earlier successes. Past the limit, 429 with Retry-After: the seconds until the oldest
counted attempt leaves the window. Usernames are counted by their SHA-256 (a client picks them,
up to a body's size), a refused attempt leaves nothing behind, and rows with no attempt left in
the window are removed at each counted attempt.
"""

import contextlib
import hashlib
import math
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from server.errors import TooManyRequests
from server.store import login_attempts


class LoginThrottle:
    def __init__(self, per_username: int, per_address: int, window: float) -> None:
        self.per_username = per_username
        self.per_address = per_address
        self.window = window

    def _limits(self, username: str, address: str) -> dict[str, int]:
        """Each key of an attempt with its limit."""
        digest = hashlib.sha256(username.encode()).hexdigest()
        return {f"user:{digest}": self.per_username, f"address:{address}": self.per_address}

    @contextlib.asynccontextmanager
    async def counted(self, pool: asyncpg.Pool, username: str, address: str) -> AsyncIterator[None]:
        """One attempt counted before its block (429 past a limit) and taken back when the block
        ends without an error: the password was right."""
        attempt = await self._attempt(pool, username, address)
        yield
        await self._take_back(pool, username, address, attempt)

    async def _attempt(self, pool: asyncpg.Pool, username: str, address: str) -> datetime:
        """Count one login attempt (its time is returned); 429 when either limit is reached."""
        limits = self._limits(username, address)
        keys = sorted(limits)
        async with pool.acquire() as conn, conn.transaction():
            recent, now = await login_attempts.claim(conn, keys, self.window)
            wait = max(self._wait(recent[key], limit, now) for key, limit in limits.items())
            if wait:  # (the transaction rolls back: nothing is recorded)
                raise TooManyRequests("Too many login attempts, try again later", retry_after=wait)
            await login_attempts.add(conn, keys, now)
            await login_attempts.forget_old(conn, self.window)
        return now

    def _wait(self, attempts: list[datetime], limit: int, now: datetime) -> int:
        """Seconds until a key with these attempts may try again (0: now)."""
        if len(attempts) < limit:
            return 0
        left = (attempts[0] - now).total_seconds() + self.window
        return max(1, math.ceil(left))

    async def _take_back(
        self, pool: asyncpg.Pool, username: str, address: str, attempt: datetime
    ) -> None:
        await login_attempts.take_back(pool, sorted(self._limits(username, address)), attempt)
