"""The UI dialect's own handlers: where its requests or answers need more than a reshape.

The rest of the dialect is the main API's handlers, wrapped in server/app.py's UI_ROUTES.
"""

import dataclasses

import orjson
from aiohttp import web

from server import auth
from server.errors import NotFound, Unauthorized
from server.handlers import auth as auth_handlers
from server.handlers.results import get_estimators, send_results
from server.http import error_response, json_response, query_param
from server.jobs.access import owned_simulation
from server.keys import CONFIG, POOL
from server.results import render
from server.results.filters import page_filter
from server.store import inputs as stored_inputs
from server.store import results, tasks
from server.store.results import ResultsIndex
from server.ui import shapes


async def inputs(request: web.Request) -> web.Response:
    sim_pk = (await owned_simulation(request)).sim_pk
    pool = request.app[POOL]
    found = await stored_inputs.get(pool, sim_pk)
    if found is None:
        raise NotFound("Inputs not available")
    _, rows = await tasks.job_status(pool, sim_pk)
    primaries = sum(row["requested_primaries"] for row in rows)
    converted = orjson.loads(found.files) if found.files is not None else None
    body = shapes.inputs(found.input_type, orjson.loads(found.data), converted, primaries)
    return json_response(body)


async def _project_outputs(request: web.Request, sim_pk: int) -> list[str]:
    """The output names of an editor simulation's project; [] for files input."""
    found = await stored_inputs.get(request.app[POOL], sim_pk)
    if found is None or found.input_type != "editor":
        return []
    return shapes.output_names(orjson.loads(found.data))


async def estimators(request: web.Request) -> web.Response:
    response = await get_estimators(request)  # every check and 404 of the API
    assert isinstance(response.body, bytes)
    outputs = await _project_outputs(request, (await owned_simulation(request)).sim_pk)
    return json_response(shapes.estimators(orjson.loads(response.body), outputs))


async def _full_results(request: web.Request) -> web.StreamResponse:
    """The API's form, with the estimators in the project's order (the UI pairs them with
    the project's outputs by position)."""
    job_id = query_param(request, "job_id")
    found = await results.index(request.app[POOL], job_id, None, page_filter(request.query))
    if found is not None:
        order = shapes.project_position(await _project_outputs(request, found.sim_pk))
        pages = sorted(found.pages, key=lambda page: order(page.estimator))  # stable
        found = dataclasses.replace(found, pages=pages)
    return await send_results(request, found, None)


async def _index(request: web.Request, name: str, numbers: list[int] | None) -> ResultsIndex | None:
    """The results index of the stored estimator the UI's `name` stands for."""
    job_id = query_param(request, "job_id")
    found = None
    for stored in shapes.stored_names(name):
        found = await results.index(request.app[POOL], job_id, stored, numbers)
        if found is None or not found.has_results or found.estimator_found:
            break
    return found


async def results_of(request: web.Request) -> web.StreamResponse:
    """With `estimator_name`, the UI reads the pages at the top level (`page` for
    `page_number`); without it, the API's form. Spliced from the stored page segments either
    way."""
    name = request.query.get("estimator_name") or None
    if name is None:
        return await _full_results(request)
    numbers = page_filter(request.query)
    single = request.query.get("page_number") is not None
    envelope = render.single_page if single else render.page_list
    return await send_results(request, await _index(request, name, numbers), name, envelope)


async def refresh(request: web.Request) -> web.Response:
    """A refresh token that no longer works (revoked at logout, expired) is answered as no
    token at all, and the cookies are cleared: the UI refreshes once more right after logout,
    racing the logout, and shows every other 401 message in a red snackbar."""
    try:
        return await auth_handlers.refresh(request)
    except Unauthorized:
        response = error_response(auth.NO_TOKEN, 401)
        auth.clear_cookie(response, request.app[CONFIG], auth.ACCESS_COOKIE)
        auth.clear_cookie(response, request.app[CONFIG], auth.REFRESH_COOKIE)
        return response
