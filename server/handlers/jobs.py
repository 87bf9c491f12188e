"""User-facing job endpoints: submit (`POST /jobs/direct`), status, cancel."""

import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from server.http import json_response, read_json
from server.jobs import transitions
from server.jobs.access import owned_simulation
from server.jobs.conversion import converted
from server.jobs.submission import parse_submission
from server.keys import CONFIG, DISPATCHER, POOL, USER
from server.runner import Job
from server.store import tasks
from server.timestamps import iso_utc


async def submit(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_json(request, config.server.max_body_size)
    submission = await converted(parse_submission(body, config.jobs), config.runner.converter)
    job_id = str(uuid.uuid4())
    update_key = secrets.token_urlsafe(32)
    await transitions.create_simulation(
        request.app[POOL],
        job_id=job_id,
        user_id=request[USER].id,
        title=submission.title,
        sim_type=submission.sim_type,
        input_type=submission.input_type,
        primaries=submission.primaries,
        input_data=submission.input,
        update_key_sha256=hashlib.sha256(update_key.encode()).digest(),
        input_files=submission.files,
        quota=config.jobs.user_quota,
    )
    # Converted files go to the workers as a files submission's would.
    job = Job(
        job_id=job_id,
        sim_type=submission.sim_type,
        input_type="files" if submission.files else submission.input_type,
        ntasks=submission.ntasks,
        primaries=tuple(submission.primaries),
        update_key=update_key,
        input=submission.files or submission.input,
    )
    await request.app[DISPATCHER].submit(job)
    return json_response({"message": "Job submitted", "job_id": job_id}, status=202)


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
    job_state, rows = await tasks.job_status(request.app[POOL], owner.sim_pk)
    job_tasks = [task_status(row) for row in rows]
    body = {"message": "Job status", "job_state": job_state, "job_tasks_status": job_tasks}
    return json_response(body)


async def cancel(request: web.Request) -> web.Response:
    await owned_simulation(request)
    job_id = request.query["job_id"]
    await transitions.cancel(request.app[POOL], job_id)
    # After the commit: the runner must never see a job as live that the database has ended.
    await request.app[DISPATCHER].cancel(job_id)
    return json_response({"message": "Job cancelled"})
