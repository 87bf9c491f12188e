"""Identity bodies inflated on the inflater thread (server/results/fetch/inflating.py), and streamed
ones inflated on the event loop: what a client gets is what was stored, and a page that cannot be
inflated ends the response as any failure does."""

import asyncio
import gzip
import logging
import random
import socket
import threading

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.results.fetch import inflating, render, writing
from tests.helpers import (
    answer,
    eventually,
    login,
    reference,
    set_key,
    submit,
    upload,
    upload_pages,
)

# The last page of the body: past the first bytes sent when streamed.
CORRUPT = """UPDATE pages SET data = '\\xffffffff'::bytea
WHERE (estimator_id, page_number) = (SELECT estimator_id, page_number FROM pages
                                     ORDER BY estimator_id DESC, page_number DESC LIMIT 1)"""


WAITING = "SELECT count(*) FROM pg_locks WHERE relation = 'pages'::regclass AND NOT granted"


def inflaters() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("inflater")]


async def fetch(client, job_id: str, encoding: str) -> tuple[int, bytes]:
    status, headers, body = await answer(client, job_id, encoding)
    assert int(headers["Content-Length"]) == len(body)
    return status, gzip.decompress(body) if encoding == "gzip" else body


@pytest.fixture(params=["assembled", "streamed"])
def cold_client(request, aiohttp_client, make_config, monkeypatch):
    """A client of a server without caches: every fetch reads and inflates the pages, in one
    call on the inflater thread (assembled) or 4 KB at a time on the event loop (streamed)."""
    if request.param == "streamed":
        monkeypatch.setattr(render, "SINGLE_WRITE", 0)
        monkeypatch.setattr(render, "FLUSH_AT", 4096)
        monkeypatch.setattr(writing, "FLUSH_AT", 4096)
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


async def test_a_fetch_whose_client_left_and_that_outlives_the_server_logs_no_error(
    aiohttp_server, aiohttp_client, make_config, conn, caplog
) -> None:
    """aiohttp neither cancels a handler whose client went away (run.py) nor waits for it past
    the shutdown timeout (60 s in run.py): a fetch held up by the database that long (its client,
    or nginx, has given up) runs on beside the server's cleanup. The pool's close waits until it
    gives its connection back; then it inflates its body, the inflater stopped meanwhile: that was
    "cannot schedule new futures after shutdown", an ERROR with a traceback, where the event loop
    inflated it before."""
    sizes = {"page_cache_size": 0, "body_cache_size": 0}
    server = await aiohttp_server(create_app(make_config(server=sizes)), shutdown_timeout=0.2)
    client = await aiohttp_client(server)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    values = [random.random() for _ in range(20_000)]  # about 400 KB: inflated on the thread
    pages = [{"metadata": {"page_number": 1, "name": "dose"}, "data": {"values": values}}]
    assert await upload_pages(client, job_id, pages) == 202
    assert inflating.OFF_LOOP < len(orjson.dumps(pages[0])) < render.SINGLE_WRITE
    assert (await fetch(client, job_id, "identity"))[0] == 200  # the index is cached
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    request = (
        f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: x\r\n"
        f"Cookie: access_token={cookie}\r\nAccept-Encoding: identity\r\n\r\n"
    ).encode()
    caplog.set_level(logging.INFO)
    locked = conn.transaction()
    await locked.start()
    try:
        await conn.execute("LOCK TABLE pages IN ACCESS EXCLUSIVE MODE")  # its pages wait
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(request)
            await eventually(lambda: conn.fetchval(WAITING))  # the handler waits for its pages
        closing = asyncio.create_task(client.close())
        await eventually(lambda: asyncio.sleep(0, not inflaters()))  # past the shutdown timeout
        await asyncio.sleep(0.2)
        assert not closing.done()  # the pool waits for the handler's connection
    finally:
        await locked.rollback()
    await closing
    await asyncio.sleep(0.2)
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [message for level, message in records if level >= logging.ERROR] == []
    assert [
        message for _, message in records if "/results?job_id" in message and '" 200 ' in message
    ]


async def test_a_cached_body_is_sent_as_it_was_made(client, conn) -> None:
    """Bodies from the body cache (handed to the transport with their headers in one writelines,
    server/limits/serving.py; larger than its 64 KiB high-water mark, so not sent at once) are
    the bytes and headers of the first answer, with their length, on a connection kept open for
    the next request."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    for encoding in ("identity", "gzip"):
        answers = [await answer(client, job_id, encoding) for _ in range(3)]  # made, cached twice
        assert answers[1] == answers[0] and answers[2] == answers[0]
        status, headers, body = answers[0]
        assert status == 200 and len(body) > 64 << 10
        assert int(headers["Content-Length"]) == len(body) and "Transfer-Encoding" not in headers
        raw = gzip.decompress(body) if encoding == "gzip" else body
        assert orjson.loads(raw) == {"message": "Results", "estimators": reference()}
