"""A simulation's files: its input (`GET /inputs`) and its log files (`GET /logfiles`)."""

from collections.abc import Iterator

import asyncpg
import orjson
from aiohttp import web

from server.errors import NotFound
from server.jobs.access import owned_simulation
from server.keys import POOL
from server.limits.serving import drop_when_stalled
from server.results.writing import Stall
from server.store import inputs, logfiles


async def get_inputs(request: web.Request) -> web.Response:
    owner = await owned_simulation(request)
    found = await inputs.get(request.app[POOL], owner.sim_pk)
    if found is None:
        raise NotFound("Inputs not available")
    # The stored JSON is spliced in as it is: inputs can be large, and parsing it only to
    # serialise it again would gain nothing.
    parts = [b'{"message":"Inputs","input_type":', orjson.dumps(found.input_type)]
    parts += [b',"input":', found.data]
    if found.files is not None:  # an editor project and the files converted from it
        parts += [b',"input_files":', found.files]
    return web.Response(body=b"".join([*parts, b"}"]), content_type="application/json")


async def get_logfiles(request: web.Request) -> web.StreamResponse:
    """`{"message": "Logfiles", "logfiles": {name: text}}`, written a batch of files at a time:
    a simulation of 1000 tasks may hold hundreds of MB of logs. The first batch is read before
    the answer begins, so that a failure then is still an error response. A HEAD gets the
    headers only (no length: the body is never made)."""
    owner = await owned_simulation(request)
    batches = logfiles.read_batches(request.app[POOL], owner.sim_pk)
    batch: list[asyncpg.Record] = await anext(batches, [])
    if not batch:
        raise NotFound("Logfiles not available")
    if request.method == "HEAD":
        return web.Response(content_type="application/json")
    drop_when_stalled(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    separator = b'{"message":"Logfiles","logfiles":{'
    with Stall(request) as stall:  # a client that takes nothing for body_timeout is cut off
        while batch:
            for name, text in batch:
                await stall.write(response.write(separator + orjson.dumps(name) + b":"))
                for piece in _json_string(text):
                    await stall.write(response.write(piece))
                separator = b","
            batch = await anext(batches, [])
        await stall.write(response.write_eof(b"}}"))
    return response


TEXT_PIECE = 1 << 18  # characters encoded at once (orjson sizes its buffer for the worst case)


def _json_string(text: str) -> Iterator[bytes]:
    """`text` as a JSON string, encoded a piece at a time: at once, a log of tens of MB took
    about ten times its size."""
    if len(text) <= TEXT_PIECE:
        yield orjson.dumps(text)
        return
    yield b'"'
    for start in range(0, len(text), TEXT_PIECE):
        yield orjson.dumps(text[start : start + TEXT_PIECE])[1:-1]
    yield b'"'
