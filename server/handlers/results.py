"""Results: upload by workers (`POST /results`) and the read side (`GET /results`, `/estimators`).

`GET /results` never parses stored pages: it writes the JSON envelope and splices each stored
deflate segment in, inflated (identity) or as is (gzip), streaming a batch of pages at a time.
"""

import hashlib
from typing import Any

import orjson
from aiohttp import web

from server import auth
from server.access import check_owner, check_worker, simulation_id_of, update_key_of
from server.deflate import GZIP_HEADER, GzipJoiner, inflate_segment
from server.errors import NotFound
from server.filters import page_filter
from server.http import json_response, query_param, read_json
from server.keys import CONFIG, POOL, USER
from server.models import TERMINAL_STATES
from server.pages import parse_estimators
from server.store import jobs, results

NO_RESULTS = "Results not available"
_FLUSH_AT = 1 << 18


@auth.public
async def upload(request: web.Request) -> web.Response:
    body = await read_json(request, request.app[CONFIG].server.worker_max_body_size)
    job_id = simulation_id_of(body)
    key = update_key_of(request, body)
    estimators = parse_estimators(body.get("estimators"))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await jobs.lock_for_worker(conn, job_id)
        check_worker(row, key)
        await results.save(conn, row["id"], estimators)
        await jobs.recompute_state(conn, row["id"])
    return json_response({"message": "Results saved"}, status=202)


def accepts_gzip(request: web.Request) -> bool:
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            return q not in ("0", "0.0", "0.00", "0.000")
    return False


def etag_for(head: Any, query: str, gzip: bool) -> str | None:
    """Results of a terminal job never change (its update key is dead): they get an ETag."""
    if head["job_state"] not in TERMINAL_STATES:
        return None
    tag = f"{head['id']}|{head['end_time']}|{query}|{gzip}".encode()
    return '"' + hashlib.blake2b(tag, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


class _Body:
    """Buffers small writes; identity inflates segments, gzip passes them through."""

    def __init__(self, response: web.StreamResponse, gzip: bool) -> None:
        self.response = response
        self.gzip = GzipJoiner() if gzip else None
        self.buffer = bytearray(GZIP_HEADER if gzip else b"")

    def clear(self, raw: bytes) -> None:
        self.buffer += self.gzip.clear(raw) if self.gzip else raw

    async def page(self, row: Any) -> None:
        if self.gzip:
            self.buffer += self.gzip.segment(
                row["data"], row["crc32"], row["crc_shift"], row["raw_size"]
            )
        else:
            self.buffer += inflate_segment(row["data"])
        if len(self.buffer) >= _FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        await self.response.write(bytes(self.buffer))
        self.buffer.clear()

    async def finish(self) -> None:
        if self.gzip:
            self.buffer += self.gzip.trailer()
        await self.flush()
        await self.response.write_eof()


async def get_results(request: web.Request) -> web.StreamResponse:
    job_id = query_param(request, "job_id")
    estimator = request.query.get("estimator_name") or None
    numbers = page_filter(request.query)
    pool = request.app[POOL]
    head = await results.head(pool, job_id, estimator)
    simulation_id = check_owner(head and (head["id"], head["user_id"]), request[USER].id)
    if not head["has_results"]:
        raise NotFound(NO_RESULTS)
    if not head["has_estimator"]:
        raise NotFound(f"Estimator not found: {estimator}")
    gzip = accepts_gzip(request)
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    etag = etag_for(head, request.query_string, gzip)
    if etag:
        headers["ETag"] = etag
        if matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
    if gzip:
        headers["Content-Encoding"] = "gzip"
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    body = _Body(response, gzip)
    await stream_results(pool, body, simulation_id, estimator, numbers)
    await body.finish()
    return response


async def stream_results(
    pool: Any, body: _Body, simulation_id: int, estimator: str | None, numbers: list[int] | None
) -> None:
    body.clear(b'{"message":"Results","estimators":[')
    current = None
    async with pool.acquire() as conn, conn.transaction():
        async for row in results.stream_pages(conn, simulation_id, estimator, numbers):
            if row["estimator"] != current:
                opening = b'{"name":' + orjson.dumps(row["estimator"]) + b',"pages":['
                body.clear((b"]}," if current is not None else b"") + opening)
                current = row["estimator"]
            else:
                body.clear(b",")
            await body.page(row)
    body.clear(b"]}]}" if current is not None else b"]}")


async def get_estimators(request: web.Request) -> web.Response:
    job_id = query_param(request, "job_id")
    rows = await results.estimators_of(request.app[POOL], job_id)
    check_owner((0, rows[0]["user_id"]) if rows else None, request[USER].id)
    if rows[0]["estimator"] is None:
        raise NotFound(NO_RESULTS)
    estimators: list[dict[str, Any]] = []
    for row in rows:
        if not estimators or estimators[-1]["name"] != row["estimator"]:
            estimators.append({"name": row["estimator"], "pages": []})
        if row["page_number"] is not None:
            page = {"page_number": row["page_number"], "name": row["name"]}
            estimators[-1]["pages"].append({**page, "dimensions": row["dimensions"]})
    return json_response({"message": "Estimators", "estimators": estimators})
