"""HEAD on the GET routes: the status and headers the GET gets, no body, and the connection left
in step for the next request (a body sent after a HEAD's headers would be read as the next
response). Large results are streamed by GET; their HEAD reads no page."""

import asyncio
import random
from collections.abc import Mapping

from aiohttp.test_utils import TestClient

from server.app import ROUTES, UI_ROUTES
from server.keys import BODY_CACHE, PAGE_CACHE
from server.results.fetch.render import SINGLE_WRITE
from tests.helpers import add_logfiles, login, set_key, submit, upload, upload_pages

# Date; Set-Cookie: a refresh sets new tokens each time; Transfer-Encoding: the chunks of a
# body streamed without a length (log files), which a HEAD does not make.
LEFT_OUT = {"Date", "Set-Cookie", "Transfer-Encoding"}


def comparable(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in LEFT_OUT}


def large_pages(count: int = 4, values: int = 100_000, seed: int = 15) -> list[dict]:
    """Pages of random doubles: their stored segments hardly compress, so that gzip bodies of
    the full result are streamed (above SINGLE_WRITE) too."""
    rng = random.Random(seed)
    return [
        {
            "metadata": {"page_number": str(n), "name": f"p{n}"},
            "data": {"values": [rng.random() for _ in range(values)]},
        }
        for n in range(count)
    ]


async def raw_exchange(client: TestClient, first: str, path: str, headers: str = "") -> bytes:
    """Everything the server sends on one connection for `first` (a method) on `path`, then a
    GET of / that closes the connection: what follows the first response's headers must be
    the second response, or the first one's body when `first` is a GET."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    cookie = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
    writer.write(
        f"{first} {path} HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n{headers}\r\n"
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    data = await reader.read(-1)
    writer.close()
    return data


def split_head(data: bytes) -> tuple[dict[str, str], bytes]:
    """The headers of the first response (but Date) and what follows them."""
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return {k: v for k, v in headers.items() if k != "Date"}, rest


async def test_head_of_a_streamed_result_has_the_get_headers_and_no_body(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert await upload_pages(client, job_id, large_pages()) == 202
    path = f"/results?job_id={job_id}"
    index = await (await client.get("/")).read()
    for encoding in ("identity", "gzip"):
        accept = f"Accept-Encoding: {encoding}\r\n"
        got, body = split_head(await raw_exchange(client, "GET", path, accept))
        head, after = split_head(await raw_exchange(client, "HEAD", path, accept))
        assert int(got["Content-Length"]) > SINGLE_WRITE, encoding  # GET streams it
        assert head == got
        assert after.startswith(b"HTTP/1.1 200 OK\r\n")  # the next response, no body before it
        assert after.endswith(b"\r\n\r\n" + index)
        # the GET: its whole body, then the next response
        assert body.rindex(b"HTTP/1.1 200 OK\r\n") == int(got["Content-Length"])


async def test_head_of_a_result_sent_whole_and_of_logfiles(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    await add_logfiles(client, job_id, {"task_1.log": "started\n" * 10_000})
    lengths = {}
    for name in ("results", "logfiles"):
        path = f"/{name}?job_id={job_id}"
        for encoding in ("identity", "gzip"):  # HEAD first: this body is not cached yet
            accept = f"Accept-Encoding: {encoding}\r\n"
            cached = client.app[PAGE_CACHE].size, client.app[BODY_CACHE].size
            head, after = split_head(await raw_exchange(client, "HEAD", path, accept))
            assert after.startswith(b"HTTP/1.1 200 OK\r\n"), path  # no body before the next
            # a result's HEAD reads no page: nothing was read or assembled (and cached) for it
            assert (client.app[PAGE_CACHE].size, client.app[BODY_CACHE].size) == cached, path
            got, _ = split_head(await raw_exchange(client, "GET", path, accept))
            assert comparable(head) == comparable(got), (path, encoding)
            lengths[name, encoding] = (got.get("Content-Length"), head.get("Content-Length"))
    # Results: the length of the body a GET gets; log files (streamed in chunks): none.
    for encoding in ("identity", "gzip"):
        got_length, head_length = lengths["results", encoding]
        assert got_length is not None and got_length == head_length, encoding
        assert lengths["logfiles", encoding] == (None, None)


async def test_every_get_route_answers_head_as_it_answers_get(client, conn):
    """Logged in, with a simulation that has results and logs: for every GET of both route
    tables, with and without the simulation's job_id, HEAD gets the GET's status and headers
    and an empty body."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    await add_logfiles(client, job_id, {"task_1.log": "started\n"})
    gets = [("", p) for m, p, _, _ in ROUTES if m == "GET"]
    gets += [("/ui", p) for m, p, _, _ in UI_ROUTES if m == "GET"]
    assert len(gets) >= 20
    for prefix, path in gets:
        for query in ("", f"?job_id={job_id}"):
            url = prefix + path + query
            got = await client.get(url, auto_decompress=False)
            body = await got.read()
            head = await client.head(url, auto_decompress=False)
            assert head.status == got.status, url
            assert head.status != 405, url
            assert comparable(head.headers) == comparable(got.headers), url
            assert await head.read() == b"", url
            assert body, url  # the GET had one
