"""Identity bodies inflated on the inflater thread (server/results/inflating.py), and streamed
ones inflated on the event loop: what a client gets is what was stored, and a page that cannot be
inflated ends the response as any failure does."""

import gzip
import logging
import threading

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.results import inflating, render
from tests.helpers import login, reference, set_key, submit, upload, upload_pages

# The last page of the body: past the first bytes sent when streamed.
CORRUPT = """UPDATE pages SET data = '\\xffffffff'::bytea
WHERE (estimator_id, page_number) = (SELECT estimator_id, page_number FROM pages
                                     ORDER BY estimator_id DESC, page_number DESC LIMIT 1)"""


async def fetch(client, job_id: str, encoding: str) -> tuple[int, bytes]:
    response = await client.get(
        "/results",
        params={"job_id": job_id},
        headers={"Accept-Encoding": encoding},
        auto_decompress=False,
    )
    body = await response.read()
    assert int(response.headers["Content-Length"]) == len(body)
    return response.status, gzip.decompress(body) if encoding == "gzip" else body


@pytest.fixture(params=["assembled", "streamed"])
def cold_client(request, aiohttp_client, make_config, monkeypatch):
    """A client of a server without caches: every fetch reads and inflates the pages, in one
    call on the inflater thread (assembled) or 4 KB at a time on the event loop (streamed)."""
    if request.param == "streamed":
        monkeypatch.setattr(render, "SINGLE_WRITE", 0)
        monkeypatch.setattr(render, "FLUSH_AT", 4096)
    monkeypatch.setattr(inflating, "OFF_LOOP", 0)  # the fixture's smallest views too
    sizes = {"page_cache_size": 0, "body_cache_size": 0, "index_cache_size": 0}
    return aiohttp_client(create_app(make_config(server=sizes)))


async def test_identity_bodies_are_the_stored_pages(cold_client, conn) -> None:
    client = await cold_client
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    expected = {"message": "Results", "estimators": reference()}
    for encoding in ("identity", "gzip", "identity"):
        status, body = await fetch(client, job_id, encoding)
        assert (status, orjson.loads(body)) == (200, expected)
    response = await client.get("/results", params={"job_id": job_id, "page_numbers": "2-3"})
    assert await response.json() == {"message": "Results", "estimators": reference(numbers={2, 3})}


async def test_a_page_that_inflates_to_much_more_than_it_stores(cold_client, conn) -> None:
    """A page of zeros (a dose far from the beam) is stored hundreds of times smaller than its
    JSON: streamed, a few stored KB come out as many pieces."""
    client = await cold_client
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    pages = [
        {"metadata": {"page_number": n, "name": f"p{n}"}, "data": {"values": [0.0] * 50_000}}
        for n in (1, 2)
    ]
    assert await upload_pages(client, job_id, pages) == 202
    status, body = await fetch(client, job_id, "identity")
    assert status == 200
    [estimator] = orjson.loads(body)["estimators"]
    assert [page["data"]["values"] for page in estimator["pages"]] == [[0.0] * 50_000] * 2


async def test_a_page_that_cannot_be_inflated_ends_the_response(cold_client, conn, caplog):
    """Stored bytes that are not deflate (a damaged database): assembled, a 500 with its JSON
    message; streamed, the connection is closed before the end of the body. Logged once, with
    its traceback; the server serves on."""
    client = await cold_client
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    await conn.execute(CORRUPT)
    identity = {"Accept-Encoding": "identity"}
    response = await client.get("/results", params={"job_id": job_id}, headers=identity)
    if render.SINGLE_WRITE == 0:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    else:
        assert (response.status, await response.json()) == (
            500,
            {"message": "Internal server error"},
        )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unhandled error in GET /results"]
    assert errors[0].exc_info is not None
    assert (await client.get("/estimators", params={"job_id": job_id})).status == 200


async def test_the_inflater_thread_ends_with_the_server(aiohttp_client, make_config, conn) -> None:
    def inflaters() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("inflater")]

    before = inflaters()
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    assert (await fetch(client, job_id, "identity"))[0] == 200
    assert len(inflaters()) == len(before) + 1  # it starts with the first body it inflates
    await client.close()
    assert inflaters() == before
