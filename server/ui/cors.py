"""CORS with credentials for the configured origins (`[ui] allowed_origins`), by aiohttp-cors.

The UI's HTTP client sends `credentials: 'include'`: an allowed request's Origin is echoed
(never `*`) with `Access-Control-Allow-Credentials: true`; every route answers the preflight
(`OPTIONS`); other origins get no CORS headers (a preflight from one is
403). Two things aiohttp-cors leaves out are added to every response: `Vary: Origin`, so that a
cache never serves one origin's answer to another, and the allowed origin on aiohttp's own 404
and 405 (a path or method no route has), so that the UI can read their message too. A preflight
naming a header that is not ASCII is refused before aiohttp-cors sees it (ascii_preflight).
"""

from collections.abc import Awaitable, Callable

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import MatchInfoError

REQUEST_HEADERS = ("Content-Type", "Authorization")
PREFLIGHT_MAX_AGE = 600


def completed(origins: list[str]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The response hook adding what aiohttp-cors does not (see above)."""
    allowed = frozenset(origins)

    async def complete(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        vary = headers.get("Vary", "")
        if "origin" not in vary.lower():
            headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        origin = request.headers.get("Origin")
        if origin in allowed and isinstance(request.match_info, MatchInfoError):
            headers["Access-Control-Allow-Origin"] = origin  # no route: aiohttp-cors sets none
            headers["Access-Control-Allow-Credentials"] = "true"

    return complete


@web.middleware
async def ascii_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A preflight asking for a header whose name is not ASCII is refused here (403), as
    aiohttp-cors refuses any header it does not allow: aiohttp-cors quotes the names in its
    refusal, which aiohttp cannot encode when they hold bytes that are not UTF-8 (a 500)."""
    requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "")
    if request.method == hdrs.METH_OPTIONS and not requested.isascii():
        raise web.HTTPForbidden()
    return await handler(request)


def enable_cors(app: web.Application, origins: list[str]) -> None:
    """CORS on every route `app` has now (the sub-application needs its own call)."""
    if not origins:
        return
    # Any method passes the preflight; the request itself still gets 405 where its path lacks
    # it. (Method lists per resource would be wrong: aiohttp gives one path several resources
    # when its routes are not adjacent in the table, and the first one answers OPTIONS.)
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        allow_headers=REQUEST_HEADERS,
        allow_methods="*",
        max_age=PREFLIGHT_MAX_AGE,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for resource in list(app.router.resources()):
        if isinstance(resource, web.Resource):  # not the sub-application's mount point
            cors.add(resource)
    app.on_response_prepare.append(completed(origins))
    app.middlewares.append(ascii_preflight)
