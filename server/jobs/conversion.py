"""Editor submissions: the project is converted to SHIELD-HIT12A input files at submission.

The files are stored beside the project and are what the workers receive, exactly as for a
files submission, so any node runs them with nothing extra installed. A project the converter
cannot express is a 400 naming the item, before anything is stored. An operator who configures
`[runner] converter` keeps the old way: the project goes to the workers, which run that command.

A large project takes seconds of CPU to expand (within the converter's budget), so projects are
converted off the event loop, on threads of their own (Converters): SLOTS at once in a process
and one at a time per user, so that one user's projects cannot take them all, and the default
thread pool (password checks, file work) stays free however many are submitted. When the
server stops, conversions under way are told to stop (a thread cannot be cancelled).
"""

import asyncio
import dataclasses
import threading
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from server.editor import ConversionError, convert
from server.editor.logic import Stopped
from server.errors import BadRequest, ServiceUnavailable
from server.jobs.submission import NESTED_TOO_DEEPLY, Submission
from server.keys import CONVERTERS

TITLES = {"shieldhit": "SHIELD-HIT12A", "fluka": "FLUKA", "geant4": "Geant4", "topas": "TOPAS"}
SLOTS = 2


def convert_editor(
    submission: Submission, converter: str, stop: threading.Event | None = None
) -> Submission:
    """The submission with its converted files (unchanged unless the built-in converter runs)."""
    if not _converts(submission, converter):
        return submission
    if submission.sim_type != "shieldhit":
        raise BadRequest(
            "editor projects can be run with SHIELD-HIT12A; "
            f"for {TITLES[submission.sim_type]} submit input files"
        )
    try:
        files = convert(submission.input, min(submission.primaries), stop)
    except ConversionError as exc:
        raise BadRequest(f"The project cannot be converted to SHIELD-HIT12A input: {exc}") from None
    except Stopped:  # its request was given up at the stop: nobody reads this
        raise ServiceUnavailable("The server is stopping") from None
    except RecursionError:  # a value nested deep enough (orjson reads 1,024 levels) to exhaust
        # Python's recursion limit when the converter prints or walks it (a name, a message)
        raise BadRequest(NESTED_TOO_DEEPLY) from None
    return dataclasses.replace(submission, files=files)


def _converts(submission: Submission, converter: str) -> bool:
    return submission.input_type == "editor" and not converter


class Converters:
    """The threads editor projects are converted on (see the module's docstring)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._threads = ThreadPoolExecutor(SLOTS, thread_name_prefix="converter")
        self._users: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def converted(self, user_id: int, submission: Submission, converter: str) -> Submission:
        """convert_editor on a converter thread, after the user's conversion under way."""
        if not _converts(submission, converter):
            return submission
        lock = self._users.setdefault(user_id, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._threads, convert_editor, submission, converter, self.stop
            )

    def close(self) -> None:
        """Tell the conversions under way to stop, and wait until they have."""
        self.stop.set()
        self._threads.shutdown(cancel_futures=True)


async def converters_ctx(app: web.Application) -> AsyncIterator[None]:
    converters = Converters()
    app[CONVERTERS] = converters
    try:
        yield
    finally:
        await asyncio.to_thread(converters.close)
