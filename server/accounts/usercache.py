"""A short-lived, per-process memory of users whose tokens were checked against the database."""

import math
import time
from typing import Any

from server.models import User


class UserCache:
    """Users whose access token was checked against the database less than `ttl` seconds ago.

    Saves a round trip on most requests; a deleted user, an access token from before a password
    change, or one of a session logged out in another process, is refused within `ttl` seconds
    (in the process that logged it out or changed the password: at once, see `forget`)."""

    MAX_ENTRIES = 10_000
    # Cookie headers longer than this (a client's own making, up to 8 KB each) are not kept,
    # so the headers remembered take at most MAX_ENTRIES times this much.
    MAX_HEADER = 2048

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[int, tuple[float, User]] = {}
        # verified access tokens: their signature is checked once
        self._tokens: dict[str, dict[str, Any]] = {}
        # whole Cookie headers accepted: (monotonic time of the check, token expiry, user)
        self._headers: dict[str, tuple[float, float, User]] = {}
        self._ended: set[str] = set()  # ids of sessions found logged out (they never come back)
        self._forgotten: dict[int, float] = {}  # user id -> monotonic time of its last forget

    def get(self, user_id: int) -> User | None:
        entry = self._seen.get(user_id)
        if entry is None or time.monotonic() - entry[0] >= self.ttl:
            return None
        return entry[1]

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before, while it has not expired."""
        claims = self._tokens.get(token)
        if claims is None or claims["exp"] <= time.time():
            return None
        return claims

    def put_claims(self, token: str, claims: dict[str, Any]) -> None:
        if len(self._tokens) >= self.MAX_ENTRIES:
            self._tokens.clear()
        self._tokens[token] = claims

    def put(self, user: User, read_at: float) -> None:
        """Remember `user` as read from the database at `read_at` (monotonic, when the read
        began), unless what is known of them was dropped since (a logout or password change
        while the read was under way: what it read may be from before)."""
        if self.ttl <= 0 or self._forgotten.get(user.id, -math.inf) >= read_at:
            return
        if len(self._seen) >= self.MAX_ENTRIES:
            self._seen.clear()
        self._seen[user.id] = (read_at, user)

    def by_header(self, header: str) -> User | None:
        """The user of a Cookie header accepted less than `ttl` ago, while its token is valid."""
        entry = self._headers.get(header)
        if entry is None:
            return None
        checked, expires, user = entry
        if time.monotonic() - checked >= self.ttl or expires <= time.time():
            return None
        return user

    def put_header(self, header: str, user: User, expires: float) -> None:
        """Remember a Cookie header accepted for `user`, as of when `user` was read from the
        database: a header first seen later must not extend what that read vouches for."""
        if self.ttl <= 0 or len(header) > self.MAX_HEADER:
            return
        if len(self._headers) >= self.MAX_ENTRIES:
            self._headers.clear()
        seen = self._seen.get(user.id)
        if seen is not None and seen[1] is user:  # else that read is not remembered either
            self._headers[header] = (seen[0], expires, user)

    def ended(self, session: str) -> bool:
        return session in self._ended

    def end_session(self, session: str) -> None:
        if len(self._ended) >= self.MAX_ENTRIES:
            self._ended.clear()
        self._ended.add(session)

    def forget(self, user_id: int) -> None:
        """Drop what is known of a user (a password change: their token generation moved; a
        logout: a session ended), also what reads under way now would bring back."""
        if len(self._forgotten) >= self.MAX_ENTRIES:
            self._forgotten.clear()
        self._forgotten[user_id] = time.monotonic()
        self._seen.pop(user_id, None)
        self._headers = {h: e for h, e in self._headers.items() if e[2].id != user_id}
