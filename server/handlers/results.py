"""Results: upload by workers (`POST /results`) and the read side (`GET /results`, `/estimators`).

`GET /results` never parses stored pages: server.results writes the JSON envelope and splices
each stored deflate segment in, inflated (identity) or as is (gzip).
"""

from typing import Any

from aiohttp import web

from server.errors import ApiError, NotFound
from server.http import json_response
from server.jobs import transitions
from server.jobs.access import job_id_of, read_worker_body, update_key_of
from server.keys import BODY_CACHE, CONFIG, JOB_TURNS, POOL, RESULTS_INDEX, USER
from server.limits.bodies import hold_for_parsing
from server.limits.budget import STRANGER, parse_cost, wide_text
from server.limits.pauses import Pauses
from server.parsing import optional_query_param, query_param
from server.results.caches import repeats
from server.results.caches.indexcache import Entry, View
from server.results.fetch import negotiation, render
from server.results.fetch.answers import estimators, owned_results, send_view
from server.results.fetch.filters import page_filter
from server.results.fetch.stores import write_when_finished
from server.results.pagesplit import PageSpans, page_spans, parsed_whole, skeleton, split_upload
from server.results.upload import MAX_ITEMS, parse_estimators


async def upload(request: web.Request) -> web.Response:
    raw, pauses = await read_worker_body(request), Pauses()  # others are answered meanwhile
    body, pages = await parse_upload(request, raw, pauses)  # large: pages parsed one at a time
    try:
        job_id = job_id_of(body)
        key = update_key_of(request, body)
        estimators = await parse_estimators(body.get("estimators"), pages, pauses)
    except ApiError:
        if pages is not None:  # a page not read yet may not be JSON: that answer comes first
            await pages.check_json(pauses)
        raise
    del raw, pages, body  # only the encoded pages are needed from here on
    quota = request.app[CONFIG].jobs.user_quota
    async with request.app[JOB_TURNS].turn(job_id):
        state = await transitions.save_results(request.app[POOL], job_id, key, estimators, quota)
    await write_when_finished(request.app, job_id, state)
    return json_response({"message": "Results saved"}, status=202)


async def parse_upload(
    request: web.Request, raw: bytearray, pauses: Pauses
) -> tuple[dict[str, Any], PageSpans | None]:
    """The upload parsed, what parsing takes held from the budget first: a large body of a
    known sender split into pages (pagesplit.split_upload), the rest of the body's objects and
    its largest page's (pages are parsed one at a time); any other parsed whole. A stranger's
    body is not scanned for pages: its whole parse was held before its key was looked for
    (server/jobs/access.py), and the scan of a body of brackets takes seconds."""
    spans = None if request.get(STRANGER, True) else await page_spans(raw, MAX_ITEMS, pauses)
    if spans:
        rest = skeleton(raw, spans)
        largest = max(spans, key=lambda span: span[1] - span[0])
        plus, wide = len(rest) + parse_cost(rest), await wide_text(raw, pauses)
        await hold_for_parsing(request, raw, *largest, plus=plus, wide=wide)
        parsed = split_upload(raw, spans, rest)
        if parsed is not None:
            return parsed
    await hold_for_parsing(request, raw, pauses=pauses)
    return parsed_whole(raw)


async def get_results(request: web.Request) -> web.StreamResponse:
    key = repeats.key_of(request)
    repeated = await _repeated(request, key)
    if repeated is not None:
        return repeated
    job_id = query_param(request, "job_id")
    estimator = optional_query_param(request, "estimator_name")
    numbers = page_filter(request.query)
    entry, read = await owned_results(request, job_id, whole=estimator is None and numbers is None)
    view = entry.view(estimator, numbers)
    if not view.estimator_found:
        raise NotFound(f"Estimator not found: {estimator}")
    response = await send_view(request, view, read)
    if key is not None:
        _remember(request, key, entry, view)
    return response


def _remember(request: web.Request, key: repeats.Key, entry: Entry, view: View) -> None:
    """Remember what the query came to (server/results/caches/repeats.py) if the body cache now
    holds its body: a repeat of any other (a streamed body, a cache too small) would miss it
    anyway."""
    app, gzip = request.app, negotiation.accepts_gzip(key[1])
    if (view.gzip if gzip else view.identity).body_key in app[BODY_CACHE]:
        app[RESULTS_INDEX].remember(key, entry, view, gzip)


async def _repeated(request: web.Request, key: repeats.Key | None) -> web.StreamResponse | None:
    """The answer to a query answered before from a trusted entry, from the body cache
    (server/results/caches/repeats.py); None: work it out in full."""
    if key is None:
        return None
    app = request.app
    variant = app[RESULTS_INDEX].repeat(key, request[USER].id)
    return None if variant is None else await render.from_cache(request, variant, app[BODY_CACHE])


async def get_estimators(request: web.Request) -> web.Response:
    return json_response({"message": "Estimators", "estimators": await estimators(request)})
