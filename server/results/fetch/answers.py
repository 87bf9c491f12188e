"""What the read endpoints of results share, the API's and the UI dialect's: a job's results
index checked to be the user's, a view sent in the encoding asked for, the estimators list."""

from typing import Any

from aiohttp import web

from server.errors import NotFound
from server.jobs.access import check_owner
from server.keys import POOL, RESULTS_INDEX, USER
from server.parsing import query_param
from server.results.caches import pagecache
from server.results.caches.indexcache import Found, View
from server.results.caches.pagecache import NOTHING_READ, Read
from server.results.fetch import negotiation, render
from server.results.fetch.stores import stores_of
from server.store import results

NO_RESULTS = "Results not available"


async def owned_results(request: web.Request, job_id: str, whole: bool = False) -> Found:
    """The results index of `job_id`: 404 unknown or without results, 403 someone else's. For
    a GET of the `whole` result, with its pages' data when the index is read and they are small
    (a full fetch then takes one query, not two)."""
    app = request.app
    found = await app[RESULTS_INDEX].read(app[POOL], job_id, _data_up_to(request, whole))
    owned = check_owner(found, request[USER].id)
    if not owned.entry.has_results:
        raise NotFound(NO_RESULTS)
    return owned


def _data_up_to(request: web.Request, whole: bool) -> int:
    """How many stored bytes of page data to read with the index: a batch's (what a read of
    pages takes at most) for a GET sending the whole result; none for a part, a HEAD (which
    reads no page), or a GET that may be answered 304."""
    sends = request.method == "GET" and "If-None-Match" not in request.headers
    return pagecache.BATCH_BYTES if whole and sends else 0


async def send_view(
    request: web.Request, view: View, read: Read = NOTHING_READ
) -> web.StreamResponse:
    """The pages of `view` in its body form, gzip when accepted; 304 when the client has it.
    Pages in `read` (owned_results) are not read again."""
    gzip = negotiation.accepts_gzip(negotiation.field(request.headers, "Accept-Encoding"))
    variant = view.gzip if gzip else view.identity
    if_none_match = negotiation.field(request.headers, "If-None-Match")
    if variant.etag and negotiation.matches(if_none_match, variant.etag):
        headers = {k: v for k, v in variant.headers.items() if k != "Content-Encoding"}
        return web.Response(status=304, headers=headers)
    return await render.respond(request, view, gzip, stores_of(request.app, read))


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
