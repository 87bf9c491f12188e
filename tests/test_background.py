"""The server's background loops stop when told, even when a cancellation was swallowed."""

import asyncio
import contextlib

from server.background import AGAIN_AFTER, stopped


async def test_a_loop_whose_cancellation_a_wait_for_swallowed_still_stops() -> None:
    """A loop as the server's are (rounds until cancelled, any Exception survived), in a
    round of asyncio.wait_for as libraries use it: on Python 3.11 a cancellation that comes in
    the same moment as the awaited answer is swallowed, the loop goes on, and a stop that
    cancelled it once waited for ever (a CI run hung 10 minutes in a test's teardown)."""
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[None]] = []

    async def rounds() -> None:
        while True:
            answers.append(loop.create_future())
            with contextlib.suppress(Exception):  # one bad round must not end the loop
                await asyncio.wait_for(answers[-1], 60)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(rounds())
    await asyncio.sleep(0.05)  # waiting for its first answer
    answers[0].set_result(None)  # the answer comes in the same moment as the stop
    began = loop.time()
    async with asyncio.timeout(3 * AGAIN_AFTER):
        await stopped(task)
    assert task.cancelled() and loop.time() - began < 3 * AGAIN_AFTER
