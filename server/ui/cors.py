"""CORS with credentials for the configured origins (`[ui] allowed_origins`), by aiohttp-cors.

The UI's HTTP client sends `credentials: 'include'`: an allowed request's Origin is echoed
(never `*`) with `Access-Control-Allow-Credentials: true`; every route answers the preflight
(`OPTIONS`); other origins get no CORS headers (a preflight from one is
403). Responses carry `Vary: Origin`, which aiohttp-cors does not add, so that a cache never
serves one origin's answer to another.
"""

import aiohttp_cors
from aiohttp import web

REQUEST_HEADERS = ("Content-Type", "Authorization")
PREFLIGHT_MAX_AGE = 600


async def vary_origin(request: web.Request, response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


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
    app.on_response_prepare.append(vary_origin)
