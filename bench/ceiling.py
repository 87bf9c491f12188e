"""The ceiling: a bare aiohttp app serving a full-results response from memory.

`python -m bench.ceiling PORT IDENTITY_FILE GZIP_FILE` serves, on `GET /results` (any query),
the identity bytes, or the gzip bytes with `Content-Encoding: gzip` when the client accepts gzip.
No database, no auth, no work per request: what aiohttp on this machine can do at best with a
response of this size, loaded exactly like the server under test. `GET /` answers the liveness
probe.
"""

import sys
from pathlib import Path

from aiohttp import web

from server.eventloop import new_event_loop

IDENTITY = web.AppKey("identity", bytes)
GZIPPED = web.AppKey("gzipped", bytes)


async def index(request: web.Request) -> web.Response:
    return web.json_response({"message": "Hello World!"})


async def results(request: web.Request) -> web.Response:
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=request.app[GZIPPED], headers=headers)
    return web.Response(body=request.app[IDENTITY], headers=headers)


def create_app(identity: bytes, gzipped: bytes) -> web.Application:
    app = web.Application()
    app[IDENTITY], app[GZIPPED] = identity, gzipped
    app.router.add_get("/", index)
    app.router.add_get("/results", results)
    return app


def main(argv: list[str]) -> None:
    port, identity, gzipped = int(argv[0]), Path(argv[1]), Path(argv[2])
    app = create_app(identity.read_bytes(), gzipped.read_bytes())
    # On the server's own event loop: the same stack, at best.
    loop = new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main(sys.argv[1:])
