"""The built web UI, served by this server (`[ui] static_dir`): one origin, no CORS needed.

The rule: the API and the dialect always win; the bundle is consulted only for a GET or HEAD
that matched no route, and then
1. a file of the bundle at that path is sent (aiohttp's FileResponse sends its precompressed
   `.br`/`.gz` sibling when the client accepts it); a content-hashed name such as
   `static/js/main.3f2a9c1d.js` is cached for a year (`immutable`), anything else, index.html
   included, is revalidated on every use (`no-cache`, with ETag/Last-Modified);
2. else a browser navigation (`Accept` naming text/html), outside the dialect's prefix, to a
   path whose last segment has no extension (a client-side route) gets index.html;
3. else the JSON 404 the API gives without a bundle.
`GET /` sends index.html to a browser (`Accept` naming text/html) and the JSON liveness answer
to API clients. A `static_dir` that is not a directory stops the start (bundle_ctx): the server
would otherwise run without its UI and say nothing.
"""

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.config import ConfigError
from server.keys import CONFIG

HASHED = re.compile(r"\.[0-9a-f]{8,}\.")  # main.3f2a9c1d.js, 453.0f8c6a2b.chunk.js
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
INDEX = "index.html"


@dataclass(frozen=True)
class Bundle:
    """A built UI: its directory, and the dialect prefix that client routes never shadow."""

    root: Path
    api_prefix: str

    def file(self, url_path: str) -> Path | None:
        """The bundle's regular file at `url_path`; never hidden, never outside the bundle."""
        parts = [part for part in url_path.split("/") if part]
        if not parts or any(part.startswith(".") or "\\" in part for part in parts):
            return None
        root = self.root.resolve()
        try:
            path = root.joinpath(*parts).resolve()
            return path if path.is_relative_to(root) and path.is_file() else None
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system
            return None

    def is_dialect(self, url_path: str) -> bool:
        return url_path == self.api_prefix or url_path.startswith(self.api_prefix + "/")

    def page_for(self, request: web.Request) -> Path | None:
        """What the bundle has for an unmatched GET (rules 1 and 2), if anything."""
        if self.is_dialect(request.path):
            return None
        path = self.file(request.path)
        if path is None and wants_html(request) and "." not in request.path.rsplit("/", 1)[-1]:
            path = self.file(INDEX)
        return path


async def bundle_ctx(app: web.Application) -> AsyncIterator[None]:
    """Refuses to start when `[ui] static_dir` is set to something that is not a directory."""
    static_dir = app[CONFIG].ui.static_dir
    root = Path(static_dir).absolute()
    if static_dir and not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise ConfigError(f"ui.static_dir: {root} {problem}")
    yield


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def send_file(path: Path) -> web.FileResponse:
    cache = IMMUTABLE if HASHED.search(path.name) else REVALIDATE
    # Vary even when sent as is: a `.gz`/`.br` sibling may be chosen for another client.
    return web.FileResponse(path, headers={"Cache-Control": cache, "Vary": "Accept-Encoding"})


def html_or(api_index: Handler, bundle: Bundle | None) -> Handler:
    """`GET /`: the UI's index.html for a browser, `api_index` for everyone else."""

    async def index(request: web.Request) -> web.StreamResponse:
        if bundle is not None and wants_html(request):
            page = bundle.file(INDEX)
            if page is not None:
                return send_file(page)
        return await api_index(request)

    return index


def bundle_middleware(bundle: Bundle) -> Middleware:
    """Serves the bundle where no route matched (the rule in the module docstring)."""

    @web.middleware
    async def serve_bundle(request: web.Request, handler: Handler) -> web.StreamResponse:
        unmatched = isinstance(request.match_info.http_exception, web.HTTPNotFound)
        if not unmatched or request.method not in ("GET", "HEAD"):
            return await handler(request)
        path = bundle.page_for(request)
        return send_file(path) if path is not None else await handler(request)

    return serve_bundle
