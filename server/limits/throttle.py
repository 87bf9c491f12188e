"""Login throttling: attempts counted per username and per client address in a sliding window.

An attempt is counted before its password is checked (concurrent guesses count too); a
successful login takes its own attempt back, so a user who types the password right is never
held up by their own earlier successes. Past the limit, 429 with Retry-After: the seconds until
the oldest counted attempt leaves the window. Usernames are counted by their SHA-256 (a client
picks them, up to a body's size), and a refused attempt leaves nothing behind.
"""

import hashlib
import math
import time
from collections import deque

from server.errors import TooManyRequests

_PRUNE_AT = 10_000  # keys kept before those with no attempt left in the window are dropped


class SlidingCounter:
    """Timestamps of recent events per key, each kept for `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def wait_for(self, key: str, now: float) -> int:
        """Seconds until `key` may act again (0: now); an unknown key is not added."""
        if key not in self._events:
            return 0
        events = self._recent(key, now)
        if len(events) < self.limit:
            return 0
        return max(1, math.ceil(events[0] + self.window - now))

    def add(self, key: str, now: float) -> None:
        self._recent(key, now).append(now)
        if len(self._events) > _PRUNE_AT:
            self._prune(now)

    def discard(self, key: str, moment: float) -> None:
        events = self._events.get(key)
        if events and moment in events:
            events.remove(moment)

    def _prune(self, now: float) -> None:
        stale = [key for key, events in self._events.items() if not self._recent(key, now)]
        for key in stale:
            del self._events[key]


class LoginThrottle:
    def __init__(self, per_username: int, per_address: int, window: float) -> None:
        self.usernames = SlidingCounter(per_username, window)
        self.addresses = SlidingCounter(per_address, window)

    def attempt(self, username: str, address: str) -> float:
        """Count one login attempt (its id is returned); 429 when either limit is reached."""
        username, now = _digest(username), time.monotonic()
        wait = max(self.usernames.wait_for(username, now), self.addresses.wait_for(address, now))
        if wait:
            raise TooManyRequests("Too many login attempts, try again later", retry_after=wait)
        self.usernames.add(username, now)
        self.addresses.add(address, now)
        return now

    def succeeded(self, username: str, address: str, attempt: float) -> None:
        self.usernames.discard(_digest(username), attempt)
        self.addresses.discard(address, attempt)


def _digest(username: str) -> str:
    return hashlib.sha256(username.encode()).hexdigest()
