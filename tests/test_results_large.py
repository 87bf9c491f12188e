"""A large upload is parsed a page at a time (server/results/pagesplit.py);
what is stored and served is the same as for a body parsed whole."""

import asyncio
import contextlib
import io
import random
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from server.app import create_app
from server.results.pagesplit import MAX_DEPTH, MAX_TOKENS, SPLIT_ABOVE, find_pages
from tests.helpers import KEY, login, raw_results_body, set_key, submit, upload_pages

ROOT = Path(__file__).resolve().parent.parent


def large_estimators() -> list[dict]:
    """Two estimators (with other fields) whose pages add up to more than SPLIT_ABOVE bytes."""
    values = [round(n * 0.001, 3) for n in range(100_000)]
    count = SPLIT_ABOVE // len(orjson.dumps(values)) // 2 + 2
    return [
        {
            "name": name,
            "metadata": {"unit": "Gy", "nested": {"pages": [1, 2]}},
            "pages": [
                {"metadata": {"page_number": str(n), "name": f"p{n}"}, "data": {"values": values}}
                for n in range(count)
            ],
        }
        for name in ("dose", "fluence")
    ]


async def upload(client, job_id: str, body: bytes):
    return await client.post("/results", data=io.BytesIO(body))


async def test_large_upload_round_trips(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimators = large_estimators()
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "estimators": estimators})
    assert len(body) > SPLIT_ABOVE
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    served = await client.get(f"/results?job_id={job_id}")
    assert served.status == 200
    assert await served.json() == {"message": "Results", "estimators": estimators}


async def test_large_upload_with_a_broken_page_is_400(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": large_estimators()}
    )
    broken = body.replace(b'"data":{"values":[0.0,', b'"data":{"values":[0.0,,', 1)
    response = await upload(client, job_id, broken)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_large_upload_with_a_broken_page_that_json_would_drop_is_400(
    client, conn, monkeypatch
) -> None:
    """A broken page in a `pages` array that a later duplicate `pages` key replaces: parsed
    whole, the body is not JSON (400); parsed a page at a time it must be the same 400."""
    from server.results import pagesplit

    monkeypatch.setattr(pagesplit, "SPLIT_ABOVE", 0)  # every body is split
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimator = (
        b'{"name": "e", "pages": [{"page_number": 1, "data": {"values": [nan, 01]}}],'
        b' "pages": [{"page_number": 2}]}'
    )
    body = raw_results_body(job_id, estimator)
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


MALFORMED = (400, {"message": "Malformed JSON body"})
# Bodies (their estimators, raw) that a page-at-a-time parse answered otherwise than a whole one:
# a page shaped like the parser's placeholder stood for the page a duplicate `pages` key (its
# name escaped) dropped, a broken one or another estimator's; other checks came before a broken
# page's 400.
SPLIT_LIKE_WHOLE = {
    "a placeholder-shaped page standing for a broken one": (
        b'{"name":"a","pages":[{"page_number":1,"data":{"values":[1]}}]},'
        b'{"name":"b","pages":[{"page_number":2,"data":{"values":[nan]}}],'
        b'"p\\u0061ges":[{"\\u0000page":0}]}',
        True,
        MALFORMED,
    ),
    "a placeholder-shaped page standing for another estimator's": (
        b'{"name":"a","pages":[{"page_number":1,"data":{"values":[1]}}]},'
        b'{"name":"b","pages":[{"page_number":2,"data":{"values":[2]}}],'
        b'"p\\u0061ges":[{"\\u0000page":0}]}',
        True,
        (400, {"message": "Invalid page in estimator 'b': no integer page_number"}),
    ),
    "a broken page and no key": (
        b'{"name":"a","pages":[{"page_number":1,"data":{"values":[1,]}}]}',
        False,
        MALFORMED,
    ),
    "a page without its number before a broken one": (
        b'{"name":"a","pages":[{"data":{"values":[1]}}]},'
        b'{"name":"b","pages":[{"page_number":1,"data":{"values":[1 2]}}]}',
        True,
        MALFORMED,
    ),
}


@pytest.mark.parametrize(
    ("estimators", "keyed", "expected"), SPLIT_LIKE_WHOLE.values(), ids=list(SPLIT_LIKE_WHOLE)
)
async def test_a_body_parsed_a_page_at_a_time_is_answered_as_parsed_whole(
    client, conn, monkeypatch, estimators, keyed, expected
) -> None:
    from server.results import pagesplit

    await login(client)
    for split in (False, True):
        monkeypatch.setattr(pagesplit, "SPLIT_ABOVE", 0 if split else 1 << 40)
        job_id = await submit(client)
        await set_key(conn, job_id)
        body = raw_results_body(job_id, estimators)
        if not keyed:
            body = body.replace(b'"update_key": "%s", ' % KEY.encode(), b"")
        response = await upload(client, job_id, body)
        assert (response.status, await response.json()) == expected, f"split: {split}"
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_a_large_body_with_a_broken_page_and_no_key_is_400(client, conn) -> None:
    """The same as above, over the real threshold: it was a 403 (the key judged first)."""
    await login(client)
    job_id = await submit(client)
    values = b"[" + b"0.125," * (SPLIT_ABOVE // 6 + 10) + b"1]"
    body = b'{"simulation_id":"%s","estimators":[{"name":"a","pages":[' % job_id.encode()
    body += b'{"page_number":1,"data":{"values":%s}},' % values
    body += b'{"page_number":2,"data":{"values":[1,]}}]}]}'
    assert len(body) > SPLIT_ABOVE
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == MALFORMED


# Bodies on which a backtracking scan of strings would not end: a string that is never closed
# (time doubling with each byte after its quote), and one followed by escaped quotes (each of
# which would start a new scan to the end of the body).
# And one where each colon copied the 8 MB string before it: hours (a 17 KB gzip body, sent by
# anyone: the scan came before any key was checked).
HOSTILE = {
    "unclosed string": (b'{"estimators":[' + b"1," * 1000 + b'"' + b"a" * 64, b"None"),
    "escaped quotes after it": (b'{"a":"x' + b'\\"' * 200_000, b"None"),
    "colons after a long key": (b'{"' + b"a" * (8 << 20) + b'"' + b":" * (1 << 20) + b"}", b"[]"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_page_scan_ends_on_hostile_bodies(name) -> None:
    """In a process of its own, killed after 30 s: such a scan would hold the event loop."""
    code = "import sys; from server.results import pagesplit as p; print(p.find_pages(sys.stdin.buffer.read()))"
    body, found = HOSTILE[name]
    done = subprocess.run(
        [sys.executable, "-c", code], input=body, capture_output=True, timeout=30, cwd=ROOT
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, found + b"\n", b"")


def test_the_page_scan_stops_past_the_most_pages_an_upload_may_have() -> None:
    """Millions of `{}` pages made millions of spans (3 GB for 20 MiB), held from nothing: past
    the limit the body is parsed whole, its parse held from the budget first."""
    body = b'{"estimators":[{"name":"z","pages":[' + b",".join([b"{}"] * 11) + b"]}]}"
    assert len(find_pages(body, 11)) == 11
    assert find_pages(body, 10) is None


def test_the_page_scan_gives_up_on_deep_or_token_heavy_bodies() -> None:
    """A worker's 16 MiB of `[` made a stack of 16 million entries (1.8 GB) and held the event
    loop 14 s before any budget was held; 17 MiB of `[],` held it 9 s. Past MAX_DEPTH open
    containers or MAX_TOKENS tokens the body is parsed whole instead, its parse held from the
    budget first (and orjson refuses JSON nested that deep)."""

    def nested(depth: int) -> bytes:
        return b'{"estimators":[],"x":' + b"[" * depth + b"]" * depth + b"}"

    def wide(lists: int) -> bytes:  # three tokens a list: "[", "]" and ","
        return b'{"estimators":[],"x":[' + b"[]," * (lists - 1) + b"[]]}"

    assert find_pages(nested(MAX_DEPTH - 1)) == []
    assert find_pages(nested(MAX_DEPTH + 1)) is None
    assert find_pages(wide(MAX_TOKENS // 3 - 10)) == []
    assert find_pages(wide(MAX_TOKENS // 3 + 10)) is None


async def test_large_upload_with_a_string_never_closed_is_400(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    head = orjson.dumps({"simulation_id": job_id, "update_key": KEY})[:-1]
    body = head + b',"estimators":[' + b"1" * SPLIT_ABOVE + b'"' + b"a" * 64
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def slow_client_setup(aiohttp_client, make_config, conn, count: int):
    """A server cutting off clients after 1 s, a result of `count` values (about 20 bytes
    each), and a raw request for it, identity: (client, request, the values' JSON length)."""
    client = await aiohttp_client(create_app(make_config(server={"body_timeout": 1.0})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    values = [random.random() for _ in range(count)]
    pages = [{"metadata": {"page_number": 1, "name": "dose"}, "data": {"values": values}}]
    assert await upload_pages(client, job_id, pages) == 202
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    request = (
        f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: x\r\nCookie: access_token={cookie}\r\n"
        "Accept-Encoding: identity\r\n\r\n"
    ).encode()
    return client, request, len(orjson.dumps(values))


def slow_socket(client, request: bytes) -> socket.socket:
    """A connection with a 4 KiB receive buffer that has sent `request`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.server.host, client.server.port))
    sock.sendall(request)
    sock.settimeout(5)
    return sock


async def read_rest(sock: socket.socket) -> int:
    """Bytes read until the server closes or resets the connection, or sends nothing for 5 s."""
    received = 0
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := await asyncio.to_thread(sock.recv, 1 << 20):
            received += len(chunk)
    return received


@pytest.mark.parametrize(
    ("count", "wait"), [(400_000, 3), (70_000, 6)], ids=["streamed", "assembled"]
)
async def test_a_client_that_stops_reading_a_body_is_let_go(
    aiohttp_client, make_config, conn, count, wait
) -> None:
    """A streamed body (about 8 MB here, 3.5 MB stored) waits for its client to take each
    piece, but not for ever: a connection that stops reading holds megabytes (the pages read
    ahead, the transport's buffer) and is closed `server.body_timeout` seconds into the wait.
    A body up to SINGLE_WRITE (1.4 MB here) is handed to the transport whole: the kernel drops
    the connection once it stays unacknowledged that long (zero window probes)."""
    client, request, length = await slow_client_setup(aiohttp_client, make_config, conn, count)
    with slow_socket(client, request) as sock:
        await asyncio.sleep(wait)  # not reading
        received = await read_rest(sock)
    assert received < length, f"all {received} bytes were sent, {length} of them values"


async def test_a_client_that_reads_too_slowly_is_cut_off(
    aiohttp_client, make_config, conn, caplog
) -> None:
    """A client that takes a little of a streamed body now and then keeps its connection alive
    to TCP (what it takes is acknowledged: the kernel's timeout never fires), but a piece of
    the body that waits `server.body_timeout` seconds for it drops the connection: the client
    gets an incomplete body, and the server says why."""
    client, request, length = await slow_client_setup(aiohttp_client, make_config, conn, 400_000)
    received = 0
    with slow_socket(client, request) as sock:
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            for _ in range(40):  # 4 KiB every 0.1 s for 4 s
                if not (chunk := await asyncio.to_thread(sock.recv, 4096)):
                    break
                received += len(chunk)
                await asyncio.sleep(0.1)
        received += await read_rest(sock)
    assert received < length, f"all {received} bytes were sent, {length} of them values"
    assert "the client took nothing for 1.0 s; connection dropped" in caplog.text


async def test_what_a_split_body_keeps_besides_its_pages_is_held_from_the_budget(
    aiohttp_client, make_config, conn
) -> None:
    """A known worker's large body of one small page and, beside it, 5.6 million empty lists
    (~400 MB of objects, kept while the pages are parsed): only the page's parse was held, so
    it was parsed whatever the budget. It is held now: past the budget, a 413."""
    size = 32 << 20
    config = make_config(server={"worker_max_body_size": size, "body_budget": size})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    page = {"page_number": 1, "dimensions": 1, "data": {"values": [1.0]}}
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": [{"name": "z", "pages": [page]}]}
    )
    body = body[:-1] + b',"junk":[' + b",".join([b"[]"] * (SPLIT_ABOVE // 3 + 1)) + b"]}"
    assert len(body) > SPLIT_ABOVE
    response = await upload(client, job_id, body)
    assert response.status == 413, await response.text()
    assert (await response.json())["message"].startswith("Request body too large once parsed")
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
