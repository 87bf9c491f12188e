"""A simulation's input as its owner fetches it (`GET /inputs`, and the UI dialect's): the
stored JSON spliced into the answer as it is, never parsed again. An input whose JSON takes
WHOLE bytes or less is sent in one piece; a larger one (up to the body limit, 64 MiB by
default) is inflated a slice at a time as its client takes it (read from the database a slice
at a time too when it is stored in over LARGE bytes), so that a client that reads slowly, or
not at all, holds a slice and not a copy of the whole input (20 such clients of a 52 MB input
held 1.2 GB)."""

import asyncio
from collections.abc import Callable

from aiohttp import web

from server.errors import NotFound
from server.http import ReleasingResponse, json_stream
from server.keys import POOL
from server.limits.serving import Stall, cut_short, drop_when_stalled
from server.store import inputs

LARGE = 1 << 20  # compressed bytes of an input read whole from the database, at most
WHOLE = 2 << 20  # bytes of an input's JSON sent in one piece, at most (as results' SINGLE_WRITE)
# An answer's pieces: bytes as they are, or the name of a stored column ("data", "files").
Shape = Callable[[str, bool], list[bytes | str]]
NO_INPUT = "Inputs not available"


async def answer(request: web.Request, sim_pk: int, shape: Shape) -> web.StreamResponse:
    """The answer `shape(input_type, has_files)` makes of the simulation's stored input."""
    found = await inputs.get_small(request.app[POOL], sim_pk, LARGE)
    if found is None:
        raise NotFound(NO_INPUT)
    parts = shape(found.input_type, found.files_size is not None)
    drop_when_stalled(request)  # an input may be tens of MB
    whole = await asyncio.to_thread(inputs.inflated_within, found, WHOLE)
    if whole is None:
        return await _streamed(request, sim_pk, parts, found)
    body = spliced(parts, whole.data, whole.files)
    return ReleasingResponse(body=body, content_type="application/json")


def spliced(parts: list[bytes | str], data: bytes, files: bytes | None) -> bytes:
    """The answer `parts` make with the stored columns' JSON in their places."""
    columns = {"data": data, "files": files or b""}
    return b"".join(columns[part] if isinstance(part, str) else part for part in parts)


async def _streamed(
    request: web.Request, sim_pk: int, parts: list[bytes | str], found: inputs.InputSizes
) -> web.StreamResponse:
    if request.method == "HEAD":  # no length: the body is never made
        return web.Response(content_type="application/json")
    response = json_stream(request)
    await response.prepare(request)
    sizes = {"data": found.data_size, "files": found.files_size or 0}
    packed = {"data": found.data, "files": found.files}
    with Stall(request) as stall:
        for part in parts:
            if isinstance(part, bytes):
                await stall.write(response.write(part))
                continue
            try:
                pieces = inputs.inflated(request.app[POOL], sim_pk, part, sizes[part], packed[part])
                async for piece in pieces:
                    await stall.write(response.write(piece))
            except inputs.InputGone:
                return cut_short(request, response, "the simulation was deleted meanwhile")
        await stall.write(response.write_eof())
    return response
