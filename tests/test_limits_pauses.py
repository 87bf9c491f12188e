"""A large upload's work pauses every few milliseconds (server/limits/pauses.py), so the other
requests of the process are answered meanwhile; the scans that pause find what one pass finds."""

import asyncio
import io
import random
import time

import orjson
import pytest

from server.app import create_app
from server.jobs import access
from server.limits import budget
from server.limits.pauses import Pauses
from server.results import pagesplit, upload
from tests.helpers import KEY, login, set_key, submit

PAGES = 120


async def test_other_requests_are_answered_while_a_large_upload_is_encoded(
    client, conn, monkeypatch
):
    """Each page takes 3 ms to encode here (a stand-in for a large page's CPU): a `GET /`
    sent at the first page is answered before the last one, where it used to wait for all."""
    monkeypatch.setattr(pagesplit, "SPLIT_ABOVE", 0)  # parsed a page at a time
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    encode, other, done_at = upload.encode_page, [], []

    def slow_encode(page, number, what="page"):
        if not other:
            other.append(asyncio.ensure_future(client.get("/")))
        time.sleep(0.003)  # the event loop held, as by a large page's parse and compression
        done_at.append(other[0].done())
        return encode(page, number, what)

    monkeypatch.setattr(upload, "encode_page", slow_encode)
    pages = [{"page_number": n, "data": {"values": [n]}} for n in range(PAGES)]
    body = {
        "simulation_id": job_id,
        "update_key": KEY,
        "estimators": [{"name": "e", "pages": pages}],
    }
    response = await client.post("/results", data=io.BytesIO(orjson.dumps(body)))
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    assert (await other[0]).status == 200
    assert done_at[-1], "GET / was answered only after the upload's last page"


BODIES = [
    b'{"estimators":[{"name":"a","pages":[{"page_number":1,"v":[1,2]},{"page_number":2}]}]}',
    b'{"x":"{[","estimators":[{"pages":[{"a":{"b":[{}]}}],"name":"z"},{"pages":[]}]}',
    b'{"estimators":[{"name":"a","pages":[{"page_number":1}]}',  # not closed
    b'{"estimators":[{"name":"a","pages":[{"page_number":1]}]}',  # mismatched
    b"[1,2,3]",
]


@pytest.mark.parametrize("body", BODIES)
async def test_the_paused_page_scan_finds_what_one_pass_finds(body, monkeypatch):
    monkeypatch.setattr(pagesplit, "SPLIT_ABOVE", 0)
    monkeypatch.setattr(pagesplit, "SCAN_TOKENS", 1)
    monkeypatch.setattr(pagesplit, "SCAN_BYTES", 1)
    found = pagesplit.find_pages(body, 100)
    assert await pagesplit.page_spans(body, 100, Pauses(0)) == found
    assert (found is None) == (body in BODIES[2:4])


@pytest.mark.parametrize(
    "text, wide",
    [("plain", False), ("\\u00e9", False), ("\\u4e00", True), ("caf\u00e9", True)],
)
@pytest.mark.parametrize("offset", range(8))
async def test_wide_text_is_found_across_windows(text, wide, offset, monkeypatch):
    monkeypatch.setattr(budget, "WIDE_WINDOW", 8)
    body = ('{"a":"' + "x" * offset + text + '"}').encode()
    assert await budget.wide_text(body, Pauses(0)) is wide
    assert budget.parse_cost(body, wide=wide) == budget.parse_cost(body)


KEY_PARTS = [b'"update_key"', b" ", b"\n" * 9, b":", b'"k1"', b'"', b"x" * 7, b'\\"', b"{", b"}"]


async def test_key_members_are_found_across_windows(monkeypatch):
    """The windowed look for `"update_key": "..."` members finds what one `finditer` of each
    pattern finds, whatever the windows cut (random bodies, windows of 1 to 9 bytes)."""
    shuffle = random.Random(7)
    for _ in range(2000):
        monkeypatch.setattr(access, "_WINDOW", shuffle.randint(1, 9))
        body = b"".join(shuffle.choice(KEY_PARTS) for _ in range(shuffle.randint(0, 30)))
        values = [match.group(1) for match in access._BODY_KEY.finditer(body)]
        named = len(access._BODY_KEY_NAME.findall(body))
        limit = access._MAX_CANDIDATES + 1
        found, count = await access._key_members(body)
        assert (found, count) == (values[:limit], min(named, limit)) or named > limit, body


async def test_a_large_body_whose_key_has_blanks_across_windows_is_accepted(
    client, conn, monkeypatch
):
    """A key member whose blanks run on past the window it begins in is found before the body
    is parsed, as one found in a single pass."""
    monkeypatch.setattr(access, "_WINDOW", 64)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    pages = [{"page_number": 1, "data": {"values": [0.5] * 20_000}}]
    body = orjson.dumps({"simulation_id": job_id, "estimators": [{"name": "e", "pages": pages}]})
    body = body[:-1] + b',"update_key"' + b" " * 1000 + b': "' + KEY.encode() + b'"}'
    assert len(body) > access.PRECHECK_ABOVE
    assert await access._key_members(body) == ([KEY.encode()], 1)
    response = await client.post("/results", data=io.BytesIO(body))
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})


async def test_pages_saved_a_few_at_a_time_are_still_one_upload(
    aiohttp_client, make_config, conn, monkeypatch
):
    """One statement per page (a batch of 1 byte): all stored, or none when the upload fails
    after them (its quota check, here)."""
    from server.store import results

    monkeypatch.setattr(results, "SAVE_BATCH", 1)
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 256 << 10})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    pages = [{"page_number": n, "data": {"values": [n] * 100}} for n in range(5)]
    estimators = [{"name": "e", "pages": pages}]
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": estimators}
    response = await client.post("/results", json=body)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    served = await client.get(f"/results?job_id={job_id}")
    assert await served.json() == {"message": "Results", "estimators": estimators}
    noise = random.Random(1)
    large = [{"page_number": n, "v": [noise.random() for _ in range(20_000)]} for n in range(5)]
    bigger = {**body, "estimators": [{"name": "f", "pages": large}]}
    response = await client.post("/results", data=io.BytesIO(orjson.dumps(bigger)))
    assert response.status == 413
    assert await conn.fetchval("SELECT count(*) FROM pages") == 5
