"""Results: upload by workers (`POST /results`) and the read side (`GET /results`, `/estimators`).

`GET /results` never parses stored pages: it writes the JSON envelope and splices each stored
deflate segment in, inflated (identity) or as is (gzip), streaming a batch of pages at a time.
"""

import hashlib
from typing import Any

from aiohttp import web

from server import auth, render
from server.access import (
    check_header_key,
    check_owner,
    check_worker,
    simulation_id_of,
    update_key_of,
)
from server.errors import NotFound
from server.filters import page_filter
from server.http import json_response, optional_query_param, query_param, read_json
from server.keys import BODY_CACHE, CONFIG, PAGE_CACHE, POOL, USER
from server.models import TERMINAL_STATES
from server.pagecache import segments
from server.pages import parse_estimators
from server.store import jobs, results

NO_RESULTS = "Results not available"


@auth.public
async def upload(request: web.Request) -> web.Response:
    await check_header_key(request)
    body = await read_json(request, request.app[CONFIG].server.worker_max_body_size)
    job_id = simulation_id_of(body)
    key = update_key_of(request, body)
    estimators = parse_estimators(body.get("estimators"))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await jobs.lock_for_worker(conn, job_id)
        check_worker(row, key)
        await results.save(conn, row["id"], estimators)
        await jobs.recompute_state(conn, row["id"])
    return json_response({"message": "Results saved"}, status=202)


def accepts_gzip(request: web.Request) -> bool:
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            return q not in ("0", "0.0", "0.00", "0.000")
    return False


def etag_for(head: Any, query: str, gzip: bool) -> str | None:
    """Results of a terminal job never change (its update key is dead): they get an ETag."""
    if head["job_state"] not in TERMINAL_STATES:
        return None
    tag = f"{head['id']}|{head['end_time']}|{query}|{gzip}".encode()
    return '"' + hashlib.blake2b(tag, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


async def get_results(request: web.Request) -> web.StreamResponse:
    job_id = query_param(request, "job_id")
    estimator = optional_query_param(request, "estimator_name")
    numbers = page_filter(request.query)
    pool = request.app[POOL]
    rows = await results.index(pool, job_id, estimator, numbers)
    head = rows[0] if rows else None
    check_owner(head and (head["id"], head["user_id"]), request[USER].id)
    if not head["has_results"]:
        raise NotFound(NO_RESULTS)
    if estimator is not None and head["estimator"] is None:
        raise NotFound(f"Estimator not found: {estimator}")
    gzip = accepts_gzip(request)
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    etag = etag_for(head, request.query_string, gzip)
    if etag:
        headers["ETag"] = etag
        if matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
    if gzip:
        headers["Content-Encoding"] = "gzip"
    pages = [row for row in rows if row["page_number"] is not None]
    return await send_pages(request, headers, pages, gzip)


async def send_pages(
    request: web.Request, headers: dict[str, str], pages: list[Any], gzip: bool
) -> web.StreamResponse:
    """The body is fully determined by the pages' estimators and versions: a key for caching."""
    bodies = request.app[BODY_CACHE]
    key = (
        gzip,
        tuple((r["estimator"], r["estimator_id"], r["page_number"], r["version"]) for r in pages),
    )
    body = bodies.get(key)
    if body is not None:
        return web.Response(body=body, headers=headers)
    stored = segments(request.app[POOL], request.app[PAGE_CACHE], pages)
    pieces = render.gzipped(stored) if gzip else render.identity(stored)
    size = sum(row["stored_size" if gzip else "raw_size"] for row in pages)
    if size > render.SINGLE_WRITE:
        return await render.stream(request, headers, pieces)
    body = await render.assemble(pieces)
    bodies.put(key, body, len(body))
    return web.Response(body=body, headers=headers)


async def get_estimators(request: web.Request) -> web.Response:
    job_id = query_param(request, "job_id")
    rows = await results.estimators_of(request.app[POOL], job_id)
    check_owner((0, rows[0]["user_id"]) if rows else None, request[USER].id)
    if rows[0]["estimator"] is None:
        raise NotFound(NO_RESULTS)
    estimators: list[dict[str, Any]] = []
    for row in rows:
        if not estimators or estimators[-1]["name"] != row["estimator"]:
            estimators.append({"name": row["estimator"], "pages": []})
        if row["page_number"] is not None:
            page = {"page_number": row["page_number"], "name": row["name"]}
            estimators[-1]["pages"].append({**page, "dimensions": row["dimensions"]})
    return json_response({"message": "Estimators", "estimators": estimators})
