"""What the read endpoints of results share, the API's and the UI dialect's: a job's results
index checked to be the user's, a view sent in the encoding asked for, the estimators list."""

from typing import Any

from aiohttp import web

from server.errors import NotFound
from server.http import query_param
from server.jobs.access import check_owner
from server.keys import POOL, RESULTS_INDEX, USER
from server.results import negotiation, render
from server.results.indexcache import Entry, View
from server.results.stores import stores_of
from server.store import results

NO_RESULTS = "Results not available"


async def owned_results(request: web.Request, job_id: str) -> Entry:
    """The results index of `job_id`: 404 unknown or without results, 403 someone else's."""
    app = request.app
    entry = check_owner(await app[RESULTS_INDEX].get(app[POOL], job_id), request[USER].id)
    if not entry.has_results:
        raise NotFound(NO_RESULTS)
    return entry


async def send_view(request: web.Request, view: View) -> web.StreamResponse:
    """The pages of `view` in its body form, gzip when accepted; 304 when the client has it."""
    gzip = negotiation.accepts_gzip(negotiation.field(request.headers, "Accept-Encoding"))
    variant = view.gzip if gzip else view.identity
    if_none_match = negotiation.field(request.headers, "If-None-Match")
    if variant.etag and negotiation.matches(if_none_match, variant.etag):
        headers = {k: v for k, v in variant.headers.items() if k != "Content-Encoding"}
        return web.Response(status=304, headers=headers)
    return await render.respond(request, view, gzip, stores_of(request.app))


async def estimators(request: web.Request) -> list[dict[str, Any]]:
    """The estimators of `?job_id=` and their pages (number, name, dimensions), in the stored
    order: 404 unknown or without results, 403 someone else's."""
    job_id = query_param(request, "job_id")
    found = check_owner(await results.estimators_of(request.app[POOL], job_id), request[USER].id)
    if not found.rows:
        raise NotFound(NO_RESULTS)
    listed: list[dict[str, Any]] = []
    for row in found.rows:
        if not listed or listed[-1]["name"] != row["estimator"]:
            listed.append({"name": row["estimator"], "pages": []})
        if row["page_number"] is not None:
            page = {"page_number": row["page_number"], "name": row["name"]}
            listed[-1]["pages"].append({**page, "dimensions": row["dimensions"]})
    return listed
