"""The worker's entry point: `task` (the default) runs this task, `merge` the merge step.

Exit codes: 0 when done (also when the job ended meanwhile, e.g. was cancelled: the work is no
longer wanted), 1 when the server could not be told the outcome, 2 for a bad environment.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time

import aiohttp

from server.logs import LOG_FORMAT
from server.worker.client import JobEnded, ServerClient, ServerError
from server.worker.merge import run_merge
from server.worker.settings import Settings, SettingsError, load
from server.worker.task import run_task

log = logging.getLogger("server.worker")

STEPS = {"task": run_task, "merge": run_merge}
PARENT_CHECK = 1.0  # seconds between two looks at whether the server is still there
PR_SET_DUMPABLE = 4  # prctl(2)


def keep_key_from_children() -> None:
    """Make this process non-dumpable (Linux): the simulator and the converter it starts run as
    the same account, and could otherwise read the update key in its /proc/<pid>/environ (or
    its memory) and write it to an output the owner gets back. Their own exec makes them
    dumpable again; only a process with CAP_SYS_PTRACE can read this one's."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no /proc to read it from
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def end_with_parent() -> None:
    """Under the local runner (YAPTIDE_PARENT_PID: the server process that started this worker,
    as the leader of a process group of its own): kill the group, this worker and the
    simulators it started, once that server has ended. A server that is killed (or crashes)
    can stop nothing, and its next start fails the simulation as interrupted."""
    parent = os.environ.get("YAPTIDE_PARENT_PID", "")
    if not parent.isdigit() or os.getpgrp() != os.getpid():
        return  # not started so: the group is not this worker's to kill

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(PARENT_CHECK)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


async def run(step: str, settings: Settings) -> int:
    async with aiohttp.ClientSession() as session:
        client = ServerClient(settings, session)
        try:
            await STEPS[step](settings, client)
        except JobEnded as exc:
            log.info("stopping: the job has ended (%s)", exc)
        except ServerError as exc:
            log.error("giving up: %s", exc)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    step = args[0] if args else "task"
    if step not in STEPS or len(args) > 1:
        print("usage: python -m server.worker [task|merge]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    keep_key_from_children()
    end_with_parent()
    try:
        settings = load(merge=step == "merge")
    except SettingsError as exc:
        log.error("cannot start: %s", exc)
        return 2
    where = f"task {settings.task_id}" if step == "task" else "merge step"
    log.info("simulation %s, %s (%s)", settings.simulation_id, where, settings.sim_type)
    return asyncio.run(run(step, settings))
