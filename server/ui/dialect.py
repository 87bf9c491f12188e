"""The UI dialect as a sub-application: shared state, the UI's error messages, reshaping.

The sub-application (mounted at `[ui] api_prefix`) runs the main API's handlers on the same
pool, caches and dispatcher; its route table is in server/app.py. Handlers whose only
difference is the body's shape are wrapped with `reshaped(handler, shapes.x)`.
"""

import functools
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from server.accounts.auth import NO_TOKEN, LoggedOut
from server.errors import NotFound, Unauthorized
from server.http import ReleasingResponse
from server.jobs.access import NOT_FOUND
from server.ui import shapes


def reshaped(handler: Handler, shape: Callable[[dict[str, Any]], dict[str, Any]]) -> Handler:
    """`handler` with its JSON body passed through `shape` (errors are raised, so untouched)."""

    @functools.wraps(handler)
    async def dialect(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        body = orjson.dumps(shape(orjson.loads(response.body)))
        return ReleasingResponse(body=body, status=response.status, content_type="application/json")

    return dialect


@web.middleware
async def ui_messages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The UI shows every error message in a snackbar, except a few exact texts: an unknown
    job (e.g. polled just after its deletion) gets the one it silences, and so does the access
    token of a session logged out (the UI's own requests racing its logout)."""
    try:
        return await handler(request)
    except NotFound as exc:
        if exc.message == NOT_FOUND:
            raise NotFound(shapes.NO_JOB) from None
        raise
    except LoggedOut:  # a request sent as the UI logged out, answered after the logout
        raise Unauthorized(NO_TOKEN) from None


def share_state(parent: web.Application) -> Callable[[web.Application], Any]:
    """An on_startup hook giving the sub-application the parent's state (pool, secret,
    dispatcher, caches...): handlers read it from `request.app`, which is the sub-application
    for its routes. The parent's cleanup contexts have run by then."""

    async def copy(app: web.Application) -> None:
        for key, value in parent.items():
            app[key] = value

    return copy


def create_dialect(parent: web.Application) -> web.Application:
    """The sub-application, without routes; the parent's error middleware runs first (the
    access check is each route's own, as in the parent: `for_users`)."""
    dialect = web.Application(middlewares=[ui_messages])
    dialect.on_startup.append(share_state(parent))
    return dialect
