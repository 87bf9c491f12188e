"""User-facing job endpoints: submit (`POST /jobs/direct`, `/jobs/batch`), status, cancel."""

from typing import Any

import asyncpg
from aiohttp import web

from server.errors import BadRequest, NotFound
from server.http import json_response
from server.jobs import transitions
from server.jobs.access import NOT_FOUND, check_cluster_user, new_update_key, owned_simulation
from server.jobs.ids import new_job_id
from server.jobs.submission import Submission, parse_submission
from server.keys import CONFIG, CONVERTERS, DISPATCHER, POOL, SLURM, USER
from server.parsing import read_json
from server.runner import Job
from server.runner.slurm.batch_options import check_unlocked, parse_batch_options
from server.store import tasks
from server.timestamps import iso_utc


async def _create(request: web.Request, submission: Submission, platform: str) -> Job:
    """Store the simulation with a fresh update key; the Job for a dispatcher (key in clear)."""
    job_id = new_job_id()
    update_key, digest = new_update_key()
    await transitions.create_simulation(
        request.app[POOL],
        job_id=job_id,
        user_id=request[USER].id,
        title=submission.title,
        sim_type=submission.sim_type,
        input_type=submission.input_type,
        primaries=submission.primaries,
        input_data=submission.input,
        update_key_sha256=digest,
        input_files=submission.files,
        platform=platform,
        limits=request.app[CONFIG].jobs,
        local_runner=platform == "direct" and request.app[CONFIG].runner.kind == "local",
        to_slurm=platform == "batch" or request.app[CONFIG].runner.kind == "slurm",
    )
    # Converted files go to the workers as a files submission's would.
    return Job(
        job_id=job_id,
        sim_type=submission.sim_type,
        input_type="files" if submission.files else submission.input_type,
        ntasks=submission.ntasks,
        primaries=tuple(submission.primaries),
        update_key=update_key,
        input=submission.files or submission.input,
    )


async def _parsed(request: web.Request, body: dict[str, Any]) -> Submission:
    config, converters = request.app[CONFIG], request.app[CONVERTERS]
    submission = parse_submission(body, config.jobs)
    return await converters.converted(request[USER].id, submission, config.runner.converter)


async def submit(request: web.Request) -> web.Response:
    body = await read_json(request, request.app[CONFIG].server.max_body_size)
    job = await _create(request, await _parsed(request, body), "direct")
    await request.app[DISPATCHER].submit(job)
    return json_response({"message": "Job submitted", "job_id": job.job_id}, status=202)


async def submit_batch(request: web.Request) -> web.Response:
    """POST /jobs/batch: to the cluster `batch_options.cluster_name`, with the checked options.
    Answered once the simulation is stored: the upload and sbatch follow in the background."""
    check_cluster_user(request)
    config = request.app[CONFIG]
    body = await read_json(request, config.server.max_body_size)
    options = parse_batch_options(body)
    cluster = next((c for c in config.clusters if c.cluster_name == options.cluster_name), None)
    if cluster is None:
        raise BadRequest(f"Unknown cluster: {options.cluster_name}")
    if not cluster.available:
        raise BadRequest(f"Cluster {options.cluster_name} is not available")
    check_unlocked(options, cluster.cluster_name, cluster.locked_options)
    job = await _create(request, await _parsed(request, body), "batch")
    request.app[SLURM].submit_to(
        job, cluster.cluster_name, options.array_lines, options.collect_lines
    )
    return json_response({"message": "Job submitted", "job_id": job.job_id}, status=202)


def task_status(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "task_state": row["task_state"],
        "simulated_primaries": row["simulated_primaries"],
        "requested_primaries": row["requested_primaries"],
        "estimated_time": row["estimated_time"],
        "start_time": iso_utc(row["start_time"]),
        "end_time": iso_utc(row["end_time"]),
    }


async def status(request: web.Request) -> web.Response:
    owner = await owned_simulation(request)
    found = await tasks.job_status(request.app[POOL], owner.sim_pk)
    if found is None:  # deleted since the owner check
        raise NotFound(NOT_FOUND)
    job_state, rows = found
    job_tasks = [task_status(row) for row in rows]
    body = {"message": "Job status", "job_state": job_state, "job_tasks_status": job_tasks}
    return json_response(body)


async def batch_status(request: web.Request) -> web.Response:
    """`GET /jobs/batch`: as `/jobs/direct`, for the users who may use clusters."""
    check_cluster_user(request)
    return await status(request)


async def cancel_batch(request: web.Request) -> web.Response:
    """`DELETE /jobs/batch`: as `/jobs/direct`, for the users who may use clusters."""
    check_cluster_user(request)
    return await cancel(request)


async def cancel(request: web.Request) -> web.Response:
    """Cancels a simulation (`DELETE /jobs/direct` and `/jobs/batch`): CANCELED at once, then
    the work is told to stop."""
    await owned_simulation(request)
    job_id = request.query["job_id"]
    await transitions.cancel(request.app[POOL], job_id)
    # After the commit: a runner must never see a job as live that the database has ended.
    dispatcher = request.app[DISPATCHER]
    await dispatcher.cancel(job_id)
    slurm = request.app.get(SLURM)
    if slurm is not None and slurm is not dispatcher:  # a batch job, or one sent to SLURM
        await slurm.cancel(job_id)
    return json_response({"message": "Job cancelled"})
