"""The HTTP edge shared by every handler: the one error middleware, JSON responses and the
`Expect` handler. (Reading requests: server/parsing.py.)"""

import asyncio
import logging
from typing import Any, TypeVar

import asyncpg
import orjson
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler

from server.database import db
from server.errors import ApiError
from server.keys import CONTINUE_OWED

log = logging.getLogger(__name__)

_Answer = TypeVar("_Answer", bound=web.StreamResponse)

_HTTP_MESSAGES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


class ReleasingResponse(web.Response):
    """A web.Response that lets go of its body once written. aiohttp's connection handler keeps
    a keep-alive connection's last response until the next request on it (or its close), so
    each idle connection would hold the last body it was sent: 8 that fetched 20 MB each held
    140 MiB more than with this (uvloop, 2026-12-02)."""

    async def write_eof(self, data: bytes = b"") -> None:
        try:
            await super().write_eof(data)
        finally:
            self.body = None


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return ReleasingResponse(
        body=orjson.dumps(body), status=status, content_type="application/json"
    )


def json_stream(request: web.Request) -> web.StreamResponse:
    """A JSON answer of a length not known in advance: chunked in HTTP/1.1; in HTTP/1.0, which
    has no chunks, ended by closing the connection (aiohttp 3.14 would keep it open until the
    keep-alive timeout when the client asked to keep it, so the body never seemed to end)."""
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
    )
    if request.version < HttpVersion11:
        response.force_close()
    return response


def error_response(message: str, status: int, retry_after: int | None = None) -> web.Response:
    # A message may quote a header, whose bytes that are not UTF-8 aiohttp keeps as lone
    # surrogates, which JSON cannot hold: they become "?".
    text = message.encode("utf-8", "replace").decode()
    response = json_response({"message": text}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    message = _HTTP_MESSAGES.get(exc.status, exc.reason)
    response = error_response(message, exc.status)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: every failure becomes `{"message": ...}` with its status; or,
    when a response had begun to be sent (streamed), the connection closed (_unless_begun).
    Every answer leaves it not cacheable unless it says otherwise (no_store)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            no_store(exc)
            raise
        response = _unless_begun(request, _from_http_exception(exc))
    except asyncio.CancelledError:
        raise
    except ConnectionError as exc:  # also the database's (db.DatabaseUnreachable)
        if _client_left(request, exc):
            return _client_gone(request, exc)
        response = _unless_begun(request, _from_exception(request, exc))
    except Exception as exc:
        response = _unless_begun(request, _from_exception(request, exc))
    return no_store(response)


def no_store(response: _Answer) -> _Answer:
    """`response`, not cacheable unless it says otherwise (results: private, revalidated; the
    UI's files): answers depend on the user's cookie, at URLs that are the same for every user,
    and a shared cache must not hand them to another. Set here for every answer not yet sent
    (the error middleware's and expect_continue's); one a handler streams, prepared before it
    returns, has it from json_stream or its own headers (results). (It was an
    on_response_prepare signal, whose call cost 4 % of a cached result's fetch.)"""
    if not response.prepared:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _client_left(request: web.Request, exc: ConnectionError) -> bool:
    """Whether `exc` says the client's connection is gone: a reset (seen by a write, or ours
    when a client is cut off), or any connection error once that connection is lost (aiohttp
    fails a write waiting for the client to take what was written with a plain
    `ConnectionError("Connection lost")`)."""
    transport = request.transport
    return isinstance(exc, ConnectionResetError) or transport is None or transport.is_closing()


def _client_gone(request: web.Request, exc: ConnectionError) -> web.StreamResponse:
    """The client went away during its request (a closed tab, a dropped network, a killed
    worker), or was cut off (server/results/fetch/writing.py): nothing more can be said to it. Its
    connection is closed with a DEBUG line; re-raised, aiohttp would log an ERROR and a
    traceback for each, which any anonymous client could have written at will."""
    log.debug("%s %s: the client went away (%s)", request.method, request.path, exc)
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # never sent: aiohttp finds the connection closed


def _from_exception(request: web.Request, exc: Exception) -> web.Response:
    """The error response for `exc`; called while it is handled (log.exception shows it)."""
    if isinstance(exc, ApiError):
        return error_response(exc.message, exc.status, exc.retry_after)
    where = f"{request.method} {request.path}"
    exc = _database_error(exc)
    if isinstance(exc, db.UNAVAILABLE):
        log.warning("database unavailable in %s: %s", where, exc)
        return error_response("Database unavailable", 503, retry_after=1)
    if isinstance(exc, db.DISK_FULL):
        log.warning("database out of disk space in %s: %s", where, exc)
        return error_response("Database out of disk space", 503, retry_after=10)
    log.exception("unhandled error in %s", where)
    return error_response("Internal server error", 500)


def _database_error(exc: Exception) -> Exception:
    """`exc`, or the database's error it replaced: a transaction's exit fails (InterfaceError)
    when the connection its statement lost is already seen closed."""
    context = exc.__context__
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(
        context, (*db.UNAVAILABLE, db.DISK_FULL)
    ):
        return context
    return exc


def _unless_begun(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """`response`, unless the handler's own response has begun to be sent (a streamed body):
    its bytes cannot be taken back, so the connection is closed instead and the client sees an
    incomplete body, never an error response inside it. (Headers only prepared, not yet sent,
    are replaced by the error's.)"""
    if request.writer.output_size == 0:
        if request.get(CONTINUE_OWED):  # refused before its client sent the body: never read
            response.force_close()
        return response
    log.warning("%s %s: response cut short (%d)", request.method, request.path, response.status)
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # never sent: aiohttp finds the connection closed


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """The `Expect` header of a request to a route, which aiohttp hands to this before any
    middleware runs: `100-continue` gets its 100 Continue when the body is first read
    (server/limits/bodies.py), so that a request refused on its headers (its size, cookie or
    key) gets that answer instead, before its client sends the body; any other expectation is
    417 in JSON (aiohttp's own answer is plain text, and a 500 when the value is not UTF-8), and
    the connection closed after it, since a body announced is never read. HTTP/1.0 knows no
    Expect: ignored."""
    expect = request.headers.get("Expect", "")
    if request.version < HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        # The client may be waiting to send its body: the connection cannot go on.
        response = error_response(f"Unsupported Expect: {expect}", 417)
        response.force_close()
        return no_store(response)  # not passed through the middleware
    request[CONTINUE_OWED] = True
    return None
