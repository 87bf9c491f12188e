"""The UI dialect's own handlers: where its requests or answers need more than a reshape.

The rest of the dialect is the main API's handlers, wrapped in server/app.py's UI_ROUTES.
"""

import functools

import orjson
from aiohttp import web

from server.accounts import auth, sessions
from server.errors import NotFound, Unauthorized
from server.http import error_response, json_response
from server.jobs import input_answers
from server.jobs.access import NOT_FOUND, owned_simulation
from server.keys import CONFIG, POOL, PROJECT_OUTPUTS
from server.parsing import optional_query_param, query_param
from server.results.caches.indexcache import PAGE_LIST, SINGLE_PAGE, make_view
from server.results.fetch.answers import estimators as listed_estimators
from server.results.fetch.answers import owned_results, send_view
from server.results.fetch.filters import page_filter
from server.store import inputs as stored_inputs
from server.store import tasks
from server.ui import shapes


async def inputs(request: web.Request) -> web.StreamResponse:
    sim_pk = (await owned_simulation(request)).sim_pk
    status = await tasks.job_status(request.app[POOL], sim_pk)
    if status is None:  # deleted since the owner check
        raise NotFound(NOT_FOUND)
    primaries = sum(row["requested_primaries"] for row in status[1])
    return await input_answers.answer(
        request, sim_pk, functools.partial(shapes.inputs, primaries=primaries)
    )


async def _project_outputs(request: web.Request, sim_pk: int) -> shapes.Outputs:
    """The outputs of an editor simulation's project ([] for files input), of a simulation
    already found to be the user's. Kept by sim_pk (inputs never change): the project, which
    may be tens of MB, is read and parsed once per process, not at every request."""
    cache = request.app[PROJECT_OUTPUTS]
    outputs = cache.get(sim_pk)
    if outputs is None:
        found = await stored_inputs.get(request.app[POOL], sim_pk)
        if found is None:  # deleted since the owner check: nothing to keep
            return []
        project = orjson.loads(found.data) if found.input_type == "editor" else None
        outputs = shapes.project_outputs(project)
        cache.put(sim_pk, outputs, shapes.outputs_size(outputs))
    return outputs


async def estimators(request: web.Request) -> web.Response:
    listed = await listed_estimators(request)  # every check and 404 of the API
    outputs = await _project_outputs(request, (await owned_simulation(request)).sim_pk)
    body = {"message": "Estimators", "estimators": listed}
    return json_response(shapes.estimators(body, outputs))


async def _full_results(request: web.Request) -> web.StreamResponse:
    """The API's form, with the estimators in the project's order (the UI pairs them with
    the project's outputs by position)."""
    numbers = page_filter(request.query)
    job_id = query_param(request, "job_id")
    entry, read = await owned_results(request, job_id, whole=numbers is None)
    order = shapes.project_position(await _project_outputs(request, entry.index.head.sim_pk))
    view = entry.view(None, numbers)
    pages = tuple(sorted(view.pages, key=lambda page: order(page.estimator)))  # stable
    if pages != view.pages:
        view = make_view(
            entry.index, pages, view.estimator_found, view.form, ("project order", str(numbers))
        )
    return await send_view(request, view, read)


async def results_of(request: web.Request) -> web.StreamResponse:
    """With `estimator_name`, the UI reads the pages at the top level (`page` for
    `page_number`) of the stored estimator its name stands for; without it, the API's form.
    Spliced from the stored page segments either way."""
    name = optional_query_param(request, "estimator_name")
    if name is None:
        return await _full_results(request)
    numbers = page_filter(request.query)
    single = "page_number" in request.query  # once: page_filter checked it
    form = SINGLE_PAGE if single else PAGE_LIST
    entry = (await owned_results(request, query_param(request, "job_id"))).entry
    outputs = await _project_outputs(request, entry.index.head.sim_pk)
    for stored in shapes.stored_names(name, outputs):
        view = entry.view(stored, numbers, form)
        if view.estimator_found:
            return await send_view(request, view)
    raise NotFound(f"Estimator not found: {name}")


async def refresh(request: web.Request) -> web.Response:
    """A refresh token that no longer works (revoked at logout, expired) is answered as no
    token at all, and the cookies are cleared: the UI refreshes once more right after logout,
    racing the logout, and shows every other 401 message in a red snackbar. Without a refresh
    cookie nothing is cleared: a Keycloak session has none, and a link to this GET from any
    site (SameSite=Lax sends the cookies) would otherwise sign its user out."""
    try:
        return await sessions.refreshed(request)
    except Unauthorized:
        response = error_response(auth.NO_TOKEN, 401)
        if auth.REFRESH_COOKIE in request.cookies:
            auth.clear_cookie(response, request.app[CONFIG], auth.ACCESS_COOKIE)
            auth.clear_cookie(response, request.app[CONFIG], auth.REFRESH_COOKIE)
        return response
