"""Long work on the event loop pausing every few milliseconds, so that the other requests of the
process are answered meanwhile, not after it.

A large `POST /results` is scanned for its pages, then each page is parsed, serialised and
compressed: seconds of CPU for a result of hundreds of MB (4.2 s without a pause for 425 MB,
bench/HISTORY.md), during which nobody else's request would be answered. Such work calls
`await pauses()` between its steps; every PAUSE_AFTER seconds that lets the event loop run one
round of whatever else is ready. A step itself is not cut: one page of a result is parsed and
compressed at once (~50 ms for 6.6 MB of JSON here, ~0.6 s for a page of 77 MB).
"""

import asyncio
import time

PAUSE_AFTER = 0.005


class Pauses:
    def __init__(self, after: float = PAUSE_AFTER) -> None:
        self.after = after
        self.due = time.monotonic() + after

    async def __call__(self) -> None:
        if time.monotonic() >= self.due:
            await asyncio.sleep(0)
            self.due = time.monotonic() + self.after
