"""User-facing job endpoints: submit (`POST /jobs/direct`), status, cancel."""

import hashlib
import secrets
import uuid

from aiohttp import web

from server.http import json_response, read_json
from server.keys import CONFIG, DISPATCHER, POOL, USER
from server.runner import Job
from server.store import simulations
from server.submission import parse_submission


async def submit(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_json(request, config.server.max_body_size)
    submission = parse_submission(body, config.jobs)
    job_id = str(uuid.uuid4())
    update_key = secrets.token_urlsafe(32)
    await simulations.create(
        request.app[POOL],
        job_id=job_id,
        user_id=request[USER].id,
        title=submission.title,
        sim_type=submission.sim_type,
        input_type=submission.input_type,
        primaries=submission.primaries,
        input_data=submission.input,
        update_key_sha256=hashlib.sha256(update_key.encode()).digest(),
    )
    job = Job(
        job_id=job_id,
        sim_type=submission.sim_type,
        input_type=submission.input_type,
        ntasks=submission.ntasks,
        primaries=tuple(submission.primaries),
        update_key=update_key,
        input=submission.input,
    )
    await request.app[DISPATCHER].submit(job)
    return json_response({"message": "Job submitted", "job_id": job_id}, status=202)


async def status(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 3


async def cancel(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 3
