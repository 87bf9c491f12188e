"""Results: upload by workers (`POST /results`) and the read side (`GET /results`, `/estimators`).

`GET /results` never parses stored pages: server.results writes the JSON envelope and splices
each stored deflate segment in, inflated (identity) or as is (gzip).
"""

from typing import Any

from aiohttp import web

from server.errors import NotFound
from server.http import json_response, optional_query_param, query_param
from server.jobs import transitions
from server.jobs.access import check_owner, job_id_of, read_worker_body, update_key_of
from server.keys import BODY_CACHE, CONFIG, PAGE_CACHE, POOL, USER
from server.results import negotiation, render
from server.results.filters import page_filter
from server.results.pagesplit import split_upload
from server.results.upload import parse_estimators
from server.store import results

NO_RESULTS = "Results not available"


async def upload(request: web.Request) -> web.Response:
    raw = await read_worker_body(request)
    body, pages = split_upload(raw)  # large bodies: pages parsed one at a time, below
    job_id = job_id_of(body)
    key = update_key_of(request, body)
    estimators = parse_estimators(body.get("estimators"), pages)
    del raw, pages, body  # only the encoded pages are needed from here on
    quota = request.app[CONFIG].jobs.user_quota
    await transitions.save_results(request.app[POOL], job_id, key, estimators, quota)
    return json_response({"message": "Results saved"}, status=202)


async def get_results(request: web.Request) -> web.StreamResponse:
    job_id = query_param(request, "job_id")
    estimator = optional_query_param(request, "estimator_name")
    numbers = page_filter(request.query)
    found = await results.index(request.app[POOL], job_id, estimator, numbers)
    return await send_results(request, found, estimator)


async def send_results(
    request: web.Request,
    found: results.ResultsIndex | None,
    estimator: str | None,
    envelope: render.Envelope = render.by_estimator,
) -> web.StreamResponse:
    """The pages of `found` in `envelope`, once every check has passed."""
    app = request.app
    index = check_owner(found, request[USER].id)
    if not index.has_results:
        raise NotFound(NO_RESULTS)
    if estimator is not None and not index.estimator_found:
        raise NotFound(f"Estimator not found: {estimator}")
    gzip = negotiation.accepts_gzip(request.headers.get("Accept-Encoding", ""))
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    query = request.query_string
    if envelope is not render.by_estimator:  # one tag per body form
        query = f"{envelope.__name__}?{query}"
    etag = negotiation.etag_for(index.sim_pk, index.job_state, index.end_time, query, gzip)
    if etag:
        headers["ETag"] = etag
        if negotiation.matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
    if gzip:
        headers["Content-Encoding"] = "gzip"
    stores = (app[POOL], app[PAGE_CACHE], app[BODY_CACHE])
    return await render.respond(request, headers, index.pages, gzip, stores, envelope)


async def get_estimators(request: web.Request) -> web.Response:
    job_id = query_param(request, "job_id")
    found = check_owner(await results.estimators_of(request.app[POOL], job_id), request[USER].id)
    if not found.rows:
        raise NotFound(NO_RESULTS)
    estimators: list[dict[str, Any]] = []
    for row in found.rows:
        if not estimators or estimators[-1]["name"] != row["estimator"]:
            estimators.append({"name": row["estimator"], "pages": []})
        if row["page_number"] is not None:
            page = {"page_number": row["page_number"], "name": row["name"]}
            estimators[-1]["pages"].append({**page, "dimensions": row["dimensions"]})
    return json_response({"message": "Estimators", "estimators": estimators})
