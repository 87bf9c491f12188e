"""Stopping the server's background loops for sure.

Each loop (the change listener, the SLURM reconciler, the sweep of job directories, the local
runner's lock reclaim) runs until it is cancelled, and catches Exception so that one bad round
does not end it. On Python 3.11, asyncio.wait_for (which libraries use) swallows a cancellation
that comes in the same moment as what it waits for completes: such a loop then goes on, and a
stop that cancelled it once waits for ever. `stopped` cancels again until the task has ended.
"""

import asyncio
from typing import Any

AGAIN_AFTER = 1.0  # seconds


async def stopped(task: "asyncio.Task[Any]") -> None:
    """Cancel `task`, again every AGAIN_AFTER seconds while it runs on, until it has ended; an
    exception it ended with is raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=AGAIN_AFTER)
    if not task.cancelled():
        task.result()
