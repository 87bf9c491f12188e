"""Worker-facing endpoints (update key auth): `POST /tasks`, `POST /jobs`, `POST /logfiles`
(`POST /results`: server/handlers/results.py)."""

from typing import Any

from aiohttp import web

from server.http import json_response
from server.jobs import transitions
from server.jobs.access import job_id_of, read_worker_body, read_worker_json, update_key_of
from server.jobs.logsplit import parse_logfiles_body
from server.jobs.reports import parse_job_state, parse_logfiles, parse_task_id, parse_update_dict
from server.keys import CONFIG, DISPATCHER, JOB_TURNS, POOL
from server.limits.pauses import Pauses
from server.parsing import field
from server.results.fetch.stores import write_when_finished


async def read_report(request: web.Request) -> tuple[dict[str, Any], str, str]:
    """The body (inflated when sent encoded), its job_id and the update key."""
    body = await read_worker_json(request)
    return body, job_id_of(body), update_key_of(request, body)


async def update_task(request: web.Request) -> web.Response:
    body, job_id, key = await read_report(request)
    task_id = parse_task_id(body)
    update = parse_update_dict(field(body, "update_dict", dict))
    async with request.app[JOB_TURNS].turn(job_id):
        state = await transitions.update_task(request.app[POOL], job_id, key, task_id, update)
    await write_when_finished(request.app, job_id, state)
    return json_response({"message": "Task updated"}, status=202)


async def update_job(request: web.Request) -> web.Response:
    body, job_id, key = await read_report(request)
    state = parse_job_state(body)
    async with request.app[JOB_TURNS].turn(job_id):
        failed = await transitions.update_job(request.app[POOL], job_id, key, state)
    if failed:
        await request.app[DISPATCHER].cancel(job_id)
    await write_when_finished(request.app, job_id, state)
    return json_response({"message": "Job updated"}, status=202)


async def upload_logfiles(request: web.Request) -> web.Response:
    raw, pauses = await read_worker_body(request), Pauses()  # others are answered meanwhile
    body = await parse_logfiles_body(request, raw, pauses)  # long texts a piece at a time
    job_id, key = job_id_of(body), update_key_of(request, body)
    files = parse_logfiles(field(body, "logfiles", dict))
    quota = request.app[CONFIG].jobs.user_quota
    async with request.app[JOB_TURNS].turn(job_id):
        await transitions.save_logfiles(request.app[POOL], job_id, key, files, quota)
    return json_response({"message": "Logfiles saved"}, status=202)
