"""The merge step: once every task has ended and at least one COMPLETED, merge their results.

`POST /jobs` MERGING_RUNNING first (once the job is MERGING_QUEUED: see start_merging); then
every completed task's result files (listed by the task in
`<job dir>/task_<n>/.yaptide_results.json`) are grouped by detector, merged, and uploaded in
one gzip-compressed `POST /results`, which makes the job COMPLETED. If anything goes wrong the
reason is stored as the log file `merge` and the job is set FAILED.
"""

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from server.worker.client import (
    FIRST_DELAY,
    MAX_DELAY,
    JobEnded,
    Rejected,
    ServerClient,
    ServerError,
)
from server.worker.estimators import MergeError, corename, estimator_dict, merge_files
from server.worker.jobdir import RESULTS_MANIFEST, TASK_DIR, task_dir
from server.worker.outcomes import MERGE_LOG
from server.worker.settings import Settings

log = logging.getLogger(__name__)

# The start of the 409 for a move a job that is not terminal cannot make yet
# (server.jobs.states.check_job_move); a terminal job's 409 says "Simulation is ...".
NOT_YET = "Job cannot go from "


def completed_tasks(job_dir: Path) -> list[tuple[int, list[Path]]]:
    """(task number, its result files) of every task that left a manifest, by task number."""
    found = []
    for manifest in job_dir.glob(f"{task_dir('*')}/{RESULTS_MANIFEST}"):
        match = TASK_DIR.fullmatch(manifest.parent.name)
        if match:
            names = orjson.loads(manifest.read_bytes())["files"]
            found.append((int(match[1]), [manifest.parent / name for name in names]))
    return sorted(found)


def merge_job(job_dir: Path, sim_type: str) -> list[dict[str, Any]]:
    """The merged estimators of a job directory, ready for `POST /results` (blocking)."""
    tasks = completed_tasks(job_dir)
    if not tasks:
        raise MergeError("No task left result files in the job directory: nothing to merge.")
    # In the order estimators first appear: each task lists its files in its outputs' order.
    groups: dict[str, list[Path]] = defaultdict(list)
    for _, paths in tasks:
        for path in paths:
            groups[corename(path, sim_type)].append(path)
    log.info("merging the files of %d tasks into %d estimators", len(tasks), len(groups))
    return [
        estimator_dict(merge_files(paths, sim_type, name), name) for name, paths in groups.items()
    ]


async def start_merging(settings: Settings, client: ServerClient) -> None:
    """`POST /jobs` MERGING_RUNNING, waiting while the job is not yet MERGING_QUEUED.

    Under SLURM the merge job starts when the array has ended, possibly before the reconciler
    has failed an array task SLURM ended unreported (time limit, out of memory): the job is
    still RUNNING then. Asked again with backoff for `retry_timeout` seconds, then given up
    (ServerError: the job is not merged, exit status 1); a terminal job's 409 ends the step at
    once (JobEnded: nothing left to do).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.retry_timeout
    delay = FIRST_DELAY
    while True:
        try:
            await client.update_job("MERGING_RUNNING")
            return
        except JobEnded as exc:
            if not exc.message.startswith(NOT_YET):
                raise
            left = deadline - loop.time()
            if left <= 0:
                budget = settings.retry_timeout
                raise ServerError(f"not ready to merge after {budget:g} s: {exc.message}") from None
            wait = min(delay, left)
            log.info("not ready to merge (%s); asking again in %.2f s", exc.message, wait)
        await asyncio.sleep(wait)
        delay = min(delay * 2, MAX_DELAY)


async def run_merge(settings: Settings, client: ServerClient) -> None:
    await start_merging(settings, client)
    try:
        estimators = await asyncio.to_thread(merge_job, settings.job_dir, settings.sim_type)
    except MergeError as exc:
        reason = f"The results could not be merged: {exc}"
    except Exception as exc:  # unreadable files, or a reader's bug: the job must still end
        log.exception("merge failed")
        reason = f"The results could not be merged: {type(exc).__name__}: {exc}"
    else:
        try:
            await client.save_results(estimators)
            log.info("merged results uploaded")
            return
        except JobEnded:
            raise
        except Rejected as exc:
            reason = f"The server refused the merged results: {exc}"
    log.warning("merge FAILED: %s", reason)
    await client.save_logfiles({MERGE_LOG: reason})
    await client.update_job("FAILED")
