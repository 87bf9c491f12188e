"""A simulation's files: its input (`GET /inputs`) and its log files (`GET /logfiles`)."""

import contextlib
from collections.abc import AsyncIterator, Iterator

import orjson
from aiohttp import web

from server.errors import NotFound, ServiceUnavailable
from server.http import json_stream
from server.jobs import input_answers
from server.jobs.access import owned_simulation
from server.keys import POOL
from server.limits.serving import Stall, cut_short, drop_when_stalled
from server.store import logfiles

FIRST_READS = 3  # reads of the first batch before a 503: each lost to a log file replaced


async def get_inputs(request: web.Request) -> web.StreamResponse:
    owner = await owned_simulation(request)
    return await input_answers.answer(request, owner.sim_pk, _api_shape)


def _api_shape(input_type: str, has_files: bool) -> list[bytes | str]:
    """`{"message", "input_type", "input"}`, and `input_files`: the files converted from an
    editor project (server/jobs/input_answers.py splices the stored columns in)."""
    parts: list[bytes | str] = [b'{"message":"Inputs","input_type":', orjson.dumps(input_type)]
    parts += [b',"input":', "data"]
    if has_files:
        parts += [b',"input_files":', "files"]
    return [*parts, b"}"]


async def get_logfiles(request: web.Request) -> web.StreamResponse:
    """`{"message": "Logfiles", "logfiles": {name: text}}`, written a batch of parts at a time:
    a simulation of 1000 tasks may hold hundreds of MB of logs, and one file up to
    worker_max_body_size. The first batch is read before the answer begins, so that a failure
    then is still an error response; a file replaced while it is sent cuts the connection (as
    results do), never a torn text. A HEAD gets the headers only (no length: the body is never
    made)."""
    owner = await owned_simulation(request)
    batches, batch = await _first_batch(request, owner.sim_pk)
    if not batch:
        raise NotFound("Logfiles not available")
    if request.method == "HEAD":
        return web.Response(content_type="application/json")
    drop_when_stalled(request)
    response = json_stream(request)
    await response.prepare(request)
    pending, batch = [batch], []  # the first batch must not stay referenced here throughout
    with Stall(request) as stall:  # a client that takes nothing for body_timeout is cut off
        try:
            await _send_parts(stall, response, pending, batches)
        except logfiles.LogsChanged as exc:
            return cut_short(request, response, str(exc))
        await stall.write(response.write_eof(b'"}}'))
    return response


async def _first_batch(
    request: web.Request, sim_pk: int
) -> tuple[AsyncIterator[list[logfiles.Part]], list[logfiles.Part]]:
    """The batches of the log files, and the first one read: read again when a file was
    replaced meanwhile (nothing is sent yet), at most FIRST_READS times, then a 503."""
    for _ in range(FIRST_READS):
        batches = logfiles.read_batches(request.app[POOL], sim_pk)
        with contextlib.suppress(logfiles.LogsChanged):
            return batches, await anext(batches, [])
    raise ServiceUnavailable("Log files changed while they were read; try again", retry_after=1)


async def _send_parts(
    stall: Stall,
    response: web.StreamResponse,
    pending: list[list[logfiles.Part]],
    batches: AsyncIterator[list[logfiles.Part]],
) -> None:
    """Every part (the batch in `pending`, taken from it, then the others) as the text of its
    file's member; the last file's string is left open."""
    name, batch = None, pending.pop()
    while batch:
        for part in batch:
            if part.name != name:  # a file begins: the previous one's string ends
                head = b'{"message":"Logfiles","logfiles":{' if name is None else b'",'
                await stall.write(response.write(head + orjson.dumps(part.name) + b':"'))
                name = part.name
            for piece in _escaped(part.content):
                await stall.write(response.write(piece))
        batch = await anext(batches, [])


TEXT_PIECE = 1 << 18  # characters encoded at once (orjson sizes its buffer for the worst case)


def _escaped(text: str) -> Iterator[bytes]:
    """`text` as the inside of a JSON string, encoded a piece at a time: at once, a log of tens
    of MB took about ten times its size."""
    for start in range(0, len(text), TEXT_PIECE):
        yield orjson.dumps(text[start : start + TEXT_PIECE])[1:-1]
