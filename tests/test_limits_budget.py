"""The body budget (bytes of request bodies held at once, strangers' share apart) and what a
body may make the JSON parser take."""

import asyncio
import gzip
import io
import json
import sys
import time
import tracemalloc

import orjson
import pytest

from server.app import ROUTES, UI_ROUTES
from server.keys import BODY_BUDGET
from server.limits.budget import FREE_BYTES as FREE
from server.limits.budget import FREE_PARSE, parse_cost
from tests.helpers import KEY, login, payload, set_key, submit
from tests.limits import JSON, PLAIN, K, gzip_bomb, large_upload, raw_request, response_of, started


async def test_body_budget_spent_is_503_with_retry_after(aiohttp_client, make_config, conn) -> None:
    """Past the first FREE_BYTES of a body (never counted), bytes are taken from the budget."""
    limits = {"max_body_size": FREE + 200 * K, "worker_max_body_size": FREE + 200 * K}
    limits["body_budget"] = 200 * K  # raised to the largest body: FREE + 200 KiB
    client = await started(aiohttp_client, make_config, server={**limits, "body_wait": 1.0})
    # The first request holds 190 KiB of the budget while it waits for the rest of its body.
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (FREE + 190 * K + 50)
    reader, writer = await raw_request(client, head, b" " * (FREE + 190 * K))
    await asyncio.sleep(0.3)
    started_at = time.monotonic()
    second = await client.post("/tasks", data=b" " * (FREE + 190 * K))
    waited = time.monotonic() - started_at
    expected = {"message": "Server busy: too many large request bodies at once, retry later"}
    assert (second.status, await second.json()) == (503, expected)
    assert second.headers["Retry-After"] == "1"
    assert waited >= 0.9
    writer.write(b'{"username": "alice", "password": "password1"}'.ljust(50))
    assert await response_of(reader) == (400, {"message": "Missing field: simulation_id"})
    writer.close()
    # The budget was given back: the same body is read now.
    third = await client.post("/tasks", data=b" " * (FREE + 190 * K))
    assert (third.status, await third.json()) == (400, {"message": "Malformed JSON body"})


def routes_with_bodies() -> list[tuple[str, str]]:
    """Every route of both route tables but the GETs (the UI dialect's under /ui)."""
    found = [(m, p) for m, p, _, _ in ROUTES if m != "GET"]
    return found + [(m, "/ui" + p) for m, p, _, _ in UI_ROUTES if m != "GET"]


async def test_every_route_that_reads_a_body_gives_the_budget_back(client, conn) -> None:
    """What a request body took from the budget goes back when it is answered, on every route
    but GETs; a body of whitespace is malformed JSON everywhere, once read."""
    await login(client)
    budget = client.app[BODY_BUDGET]
    answered = set()
    for method, path in routes_with_bodies():
        response = await client.request(method, path, data=b" " * (FREE + 5000))
        answered.add((response.status, (await response.read())[:40]))
        assert response.status < 500 and budget.free == budget.size, (method, path)
        assert budget.strangers.free == budget.strangers.size, (method, path)
    assert (400, b'{"message":"Malformed JSON body"}') in answered


async def test_requests_waiting_on_each_other_do_not_all_fail(
    aiohttp_client, make_config, conn
) -> None:
    """A holds 150 of 256 KiB budget, B 106; B waits for more, then A too: A, the one that
    would wait on waiters only, gets 503 at once, and B gets A's bytes and finishes."""
    limits = {"max_body_size": 256 * K, "worker_max_body_size": 256 * K, "body_budget": 256 * K}
    client = await started(aiohttp_client, make_config, server={**limits, "body_wait": 5.0})
    body = b'{"username": "alice", "password": "password1"}'.rjust(FREE + 150 * K)
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    reader_a, writer_a = await raw_request(client, head % (FREE + 190 * K), b" " * (FREE + 150 * K))
    await asyncio.sleep(0.3)
    reader_b, writer_b = await raw_request(client, head % len(body), body[: FREE + 106 * K])
    await asyncio.sleep(0.3)
    writer_b.write(body[FREE + 106 * K :])  # B waits: A, still reading, may give bytes back
    await asyncio.sleep(0.3)
    started_at = time.monotonic()
    writer_a.write(b" " * (40 * K))  # A would wait too: only waiters hold the budget now
    busy = {"message": "Server busy: too many large request bodies at once, retry later"}
    assert await response_of(reader_a) == (503, busy)
    assert time.monotonic() - started_at < 2
    assert await response_of(reader_b) == (400, {"message": "Missing field: simulation_id"})
    writer_a.close()
    writer_b.close()


async def test_strangers_holding_the_budget_block_neither_logins_nor_known_workers(
    aiohttp_client, make_config, conn
) -> None:
    """Unfinished gzip bodies of a few KiB from a stranger (no key anywhere) inflate to the
    largest worker body and stall: they can hold the strangers' half of the budget, but a login
    (a small body, never counted) and a worker whose header key was checked still get through."""
    limits = {"max_body_size": 1 << 20, "worker_max_body_size": 4 << 20, "body_budget": 8 << 20}
    limits |= {"body_wait": 1.0, "body_timeout": 6.0}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    bomb = gzip_bomb(4 << 20)
    assert len(bomb) < 10_000
    head = b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    head += b"Transfer-Encoding: chunked\r\n"
    held = [await raw_request(client, head, b"%x\r\n%s\r\n" % (len(bomb), bomb)) for _ in range(3)]
    await asyncio.sleep(1.5)  # the first holds the strangers' share, the others gave up (503)
    budget = client.app[BODY_BUDGET]
    assert budget.strangers.free == FREE and budget.free == (4 << 20) + FREE
    response = await client.post("/auth/login", data=PLAIN)
    assert response.status == 202, await response.text()
    body = large_upload(job_id, KEY).replace(b'"update_key":"' + KEY.encode() + b'",', b"")
    body = body.ljust(2 << 20)  # 2 MiB: more than the strangers left (and its parse fits)
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await client.post("/results", data=io.BytesIO(body), headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    for _, writer in held:
        writer.close()


async def test_a_stranger_waits_for_room_that_known_senders_hold(
    aiohttp_client, make_config, conn
) -> None:
    """A worker whose header key was checked holds most of the budget (no stranger holds any):
    a stranger's body that does not fit waits for room (up to body_wait), as before the
    strangers' share existed, instead of 503 at once; the room comes back when the worker's
    body ends."""
    limits = {"max_body_size": FREE + 300 * K, "worker_max_body_size": FREE + 300 * K}
    limits |= {"body_budget": 1, "body_wait": 5.0}  # raised to the largest body
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    head = b"POST /results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % KEY.encode()
    head += b"Content-Length: %d\r\n" % (FREE + 260 * K)
    reader, writer = await raw_request(client, head, b" " * (FREE + 250 * K))
    await asyncio.sleep(0.5)
    budget = client.app[BODY_BUDGET]
    assert budget.free < 150 * K and budget.strangers.free == budget.strangers.size
    started_at = time.monotonic()
    stranger = asyncio.ensure_future(client.post("/tasks", data=b" " * (FREE + 200 * K)))
    await asyncio.sleep(0.5)
    writer.write(b" " * (10 * K))  # the worker's body ends: its bytes go back
    assert (await response_of(reader))[0] == 400
    writer.close()
    response = await stranger
    answer = (response.status, await response.json(), round(time.monotonic() - started_at, 2))
    assert answer[:2] == (400, {"message": "Malformed JSON body"}), answer


@pytest.mark.parametrize(("method", "path"), [("POST", "/auth/login"), ("PUT", "/auth/register")])
async def test_a_strangers_body_cannot_make_the_parser_take_gigabytes(client, method, path):
    """Anyone may send a login or a registration, and its JSON is parsed whole: a body of empty
    arrays takes about 25 times its size in Python objects. With such bodies as large as
    `max_body_size` (64 MiB), one 64 KiB gzip login peaked at 2 GB of RSS, four at 6.7 GB. A
    public body is at most FREE bytes (413), so its parse stays within a few MiB."""
    dense = b'{"username": "alice", "password": "password1", "pad": [' + b"[]," * (1 << 21)
    data = gzip.compress(dense + b"[]]}")  # 6 MiB of JSON in 6 KiB
    tracemalloc.start()
    try:
        response = await client.request(
            method, path, data=data, headers={"Content-Encoding": "gzip"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) / 1024:.0f} KiB body"
    expected = {"message": f"Request body larger than {FREE} bytes"}
    assert (response.status, await response.json()) == (413, expected)


async def test_what_a_users_body_parses_into_is_held_from_the_budget(
    aiohttp_client, make_config, conn
):
    """A signed-in user's body is parsed whole too, and may be 64 MiB: four submissions of
    empty arrays at once peaked at 6.7 GB. The parse is estimated from the body's brackets,
    quotes and commas and held from the budget: past the whole budget it is a 413 before any
    parse, and a submission of large input files still fits."""
    limits = {"body_budget": 16 << 20, "max_body_size": 16 << 20, "worker_max_body_size": 1 << 20}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    dense = b'{"sim_type": "shieldhit", "input_type": "files", "input_files": {"pad": ['
    data = gzip.compress(dense + b"[]," * (1 << 20) + b"[]]}}")  # 3 MiB of JSON, ~70 MiB parsed
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    tracemalloc.start()
    try:
        response = await client.post("/jobs/direct", data=data, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = {
        "message": "Request body too large once parsed (about 138 MiB of objects; at most 13 MiB)"
    }
    assert (response.status, await response.json()) == (413, expected)
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) >> 10} KiB body"
    files = payload()
    files["input_files"]["beam.dat"] += "* " + "x" * (6 << 20) + "\n"  # a 6 MiB comment
    body = io.BytesIO(orjson.dumps(files))
    response = await client.post("/jobs/direct", data=body, headers=JSON)
    assert response.status == 202, await response.text()


@pytest.mark.parametrize("key", [b"", b'"update_key": "\\u0041", '], ids=["no-key", "escaped"])
@pytest.mark.parametrize("path", ["/tasks", "/jobs", "/logfiles", "/results"])
async def test_a_strangers_worker_body_cannot_make_the_parser_take_gigabytes(client, path, key):
    """README "Worker keys first": a stranger's body "never reaches the JSON parser". One with
    no key a check could reject before parsing (none at all, or an escaped one) was parsed
    whole: 6 KiB of gzip took 207 MiB, so a 256 KiB one (worker_max_body_size) about 6 GB.
    Its parse is held from the strangers' share of the budget, like a user's (413 here)."""
    dense = b'{"simulation_id": "x", ' + key + b'"pad": [' + b"[]," * (1 << 21)
    data = gzip.compress(dense + b"[]]}")  # 6 MiB of JSON in 6 KiB
    tracemalloc.start()
    try:
        response = await client.post(path, data=data, headers={"Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB to answer a {len(data) >> 10} KiB body"
    assert response.status == 413, await response.text()


@pytest.mark.parametrize("character", ["\U0001f600", "\u20ac"], ids=["astral", "bmp"])
@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "escaped"])
def test_the_parse_of_text_is_within_its_estimate(character, ensure_ascii) -> None:
    """budget.parse_cost is what parsing a body "may add in Python objects, at most". Python
    keeps a string with one character past U+00FF at 2 or 4 bytes a character: an 8 MiB input
    file with one emoji parsed into 32 MiB, and 8 MiB were held (four 64 MiB submissions:
    about 1.3 GB against a 512 MiB budget)."""
    text = "x" * (8 << 20) + character
    body = json.dumps({"input_files": {"beam.dat": text}}, ensure_ascii=ensure_ascii).encode()
    parsed = sys.getsizeof(orjson.loads(body)["input_files"]["beam.dat"])
    estimate = parse_cost(body) + FREE_PARSE
    assert parsed <= estimate, f"{parsed >> 20} MiB parsed, {estimate >> 20} MiB estimated"


@pytest.mark.parametrize("escape", ["\\u001b", "\\u00e9"])
def test_escapes_of_narrow_characters_keep_the_estimate_narrow(escape) -> None:
    """A log's colour codes (`\\u001b[31m`) or an escaped é keep Python's string at 1 byte a
    character: they were held at 4, a 100 MB log with colours at 400 MB of budget."""
    text = ("x" * 63 + escape) * (1 << 17)  # 8 MiB and more
    body = ('{"logfiles": {"a": "' + text + '"}}').encode()
    parsed = sys.getsizeof(orjson.loads(body)["logfiles"]["a"])
    assert parsed <= parse_cost(body) + FREE_PARSE < 2 * len(body)


async def test_a_body_that_could_never_fit_once_parsed_is_413(aiohttp_client, make_config, conn):
    """README: "the budget bounds parsed bodies too: one that could never fit is 413". The body
    is held as well as its parse: a 10 MiB input file (about 20 MiB with its parse, budget 16
    MiB) got 503 "retry later" on an idle server, every time it was retried."""
    limits = {"body_budget": 16 << 20, "max_body_size": 16 << 20, "worker_max_body_size": 1 << 20}
    client = await started(aiohttp_client, make_config, server=limits)
    await login(client)
    files = payload()
    files["input_files"]["beam.dat"] += "* " + "x" * (10 << 20) + "\n"  # a 10 MiB comment
    for _ in range(2):  # an idle server: a retry meets the same answer
        body = io.BytesIO(orjson.dumps(files))
        response = await client.post("/jobs/direct", data=body, headers=JSON)
        assert response.status == 413, (response.status, await response.json())
