"""Worker uploads against the body budget and the upload limits (a real server, default
configuration): the budget always given back, realistic large uploads accepted (the key in the
body or in a header), 10,000 items an upload, pages in the quota, and result bodies exact
around the pieces they are written in."""

import asyncio
import gzip
import io

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.keys import BODY_BUDGET
from tests.helpers import FLUKA_FILES, KEY, set_key, submit
from tests.test_files_parts import get, logs_job

MIB = 1 << 20


# Worker bodies hold their parse from the budget


def budget_of(client):
    budget = client.server.app[BODY_BUDGET]
    return budget.everyone.free, budget.strangers.free


def results_body(job_id: str, estimators: list, key: str = KEY, **extra) -> bytes:
    return orjson.dumps(
        {"simulation_id": job_id, "update_key": key, "estimators": estimators, **extra}
    )


def float_values(count: int, seed: int = 1) -> list[float]:
    import random

    rng = random.Random(seed)
    return [rng.random() * 1e-3 for _ in range(count)]


async def post_raw(client, path: str, body: bytes, headers: dict | None = None):
    response = await client.post(
        path, data=io.BytesIO(body), headers={"Content-Type": "application/json", **(headers or {})}
    )
    return response.status, await response.json()


async def test_the_budget_is_given_back_after_accepted_and_refused_worker_bodies(
    aiohttp_client, make_config, conn
):
    client = await aiohttp_client(
        create_app(make_config(server={"worker_max_body_size": 40 * MIB}))
    )
    job_id = await logs_job(client, conn)
    done = await submit(client, FLUKA_FILES)
    await set_key(conn, done)
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED' WHERE job_id = $1", done)
    start = budget_of(client)
    values = [0.5] * 200_000  # ~0.8 MB a page
    big_pages = [{"page_number": n, "data": {"values": values}} for n in range(24)]  # > 16 MiB
    small = [{"name": "dose", "pages": [{"page_number": 0, "data": {"values": values}}]}]
    bodies = [
        ("/results", results_body(job_id, small), 202),
        ("/results", results_body(job_id, [{"name": "d", "pages": big_pages}]), 202),
        ("/results", results_body(job_id, small)[:-3], 400),
        ("/results", results_body(job_id, small, key="wrong" * 8), 403),
        ("/results", results_body(done, small), 409),
        ("/results", results_body(job_id, [{"name": "d", "pages": [{}] * 10_001}]), 413),
        ("/results", b'{"x":"' + b"a" * (41 * MIB) + b'"}', 413),
        (
            "/logfiles",
            orjson.dumps(
                {"simulation_id": job_id, "update_key": KEY, "logfiles": {"l": "x" * (2 * MIB)}}
            ),
            202,
        ),
        (
            "/logfiles",
            orjson.dumps(
                {
                    "simulation_id": job_id,
                    "update_key": "w" * 40,
                    "logfiles": {"l": "x" * (2 * MIB)},
                }
            ),
            403,
        ),
        ("/logfiles", b"[" + b"[]," * (4 * MIB) + b"[]]", 413),
    ]
    for _ in range(3):
        for path, body, expected in bodies:
            status, answer = await post_raw(client, path, body)
            assert status == expected, (path, answer)
            # gzip too
            status, answer = await post_raw(
                client, path, gzip.compress(body, 1), {"Content-Encoding": "gzip"}
            )
            assert status == expected, (path, "gzip", answer)
    assert budget_of(client) == start


async def test_progress_reports_at_a_high_rate(aiohttp_client, make_config, conn):
    from tests.helpers import worker_setup

    client, _, identity = await worker_setup(aiohttp_client, make_config)
    start = budget_of(client)

    async def report(n: int) -> int:
        body = {
            **identity,
            "task_id": n % 4 + 1,
            "update_dict": {"task_state": "RUNNING", "simulated_primaries": n},
        }
        response = await client.post("/tasks", json=body)
        await response.read()
        return response.status

    for _ in range(4):
        statuses = await asyncio.gather(*(report(n) for n in range(250)))
        assert set(statuses) == {202}
    assert budget_of(client) == start


async def test_a_results_body_exactly_at_the_split_threshold_is_accepted(client, conn):
    from server.results.pagesplit import SPLIT_ABOVE

    job_id = await logs_job(client, conn)
    pages = [{"page_number": n, "data": {"values": float_values(20_000, n)}} for n in range(35)]
    estimators = [{"name": "dose", "pages": pages}]
    body = results_body(job_id, estimators, pad="")
    pad = SPLIT_ABOVE - len(body)
    assert pad > 0
    body = results_body(job_id, estimators, pad="p" * pad)
    assert len(body) == SPLIT_ABOVE
    assert await post_raw(client, "/results", body) == (202, {"message": "Results saved"})


async def test_a_100_mb_results_upload_of_many_pages_is_accepted(client, conn):
    job_id = await logs_job(client, conn)
    values = float_values(100_000)
    pages = [{"page_number": n, "name": f"p{n}", "data": {"values": values}} for n in range(50)]
    estimators = [{"name": f"e{k}", "pages": pages} for k in range(1)]
    body = results_body(job_id, estimators)
    assert len(body) > 90 * 1000 * 1000
    start = budget_of(client)
    assert await post_raw(client, "/results", body) == (202, {"message": "Results saved"})
    assert budget_of(client) == start


@pytest.mark.parametrize("unit", ["Gy", "\u00b5Gy"])
@pytest.mark.parametrize("key_in", ["body", "header"])
async def test_a_60_mb_one_page_result_is_accepted(client, conn, unit, key_in):
    """A worker may give its key in the body (the YAPTIDE protocol, README) or as
    `Authorization: Bearer`; a realistic 60 MB one-page result (3.2 M doubles) must be stored
    with the default configuration either way, as it was before 277e939."""
    job_id = await logs_job(client, conn)
    values = float_values(3_200_000)
    estimators = [
        {
            "name": "dose",
            "metadata": {"unit": unit},
            "pages": [{"page_number": 0, "data": {"values": values}}],
        }
    ]
    if key_in == "body":
        body, headers = results_body(job_id, estimators), {}
    else:
        body = orjson.dumps({"simulation_id": job_id, "estimators": estimators})
        headers = {"Authorization": f"Bearer {KEY}"}
    del values, estimators
    assert 55 * 10**6 < len(body) < 75 * 10**6, len(body)
    start = budget_of(client)
    assert await post_raw(client, "/results", body, headers) == (202, {"message": "Results saved"})
    assert budget_of(client) == start


# At most 10,000 estimators and pages an upload; pages' rows in the quota


async def test_more_than_10000_items_is_413_and_stores_nothing(client, conn):
    job_id = await logs_job(client, conn)
    ok = [{"name": "keep", "pages": [{"page_number": 0, "data": {"values": [1]}}]}]
    assert await post_raw(client, "/results", results_body(job_id, ok)) == (
        202,
        {"message": "Results saved"},
    )
    # 9,998, and the 2 kept: as many as a simulation holds (10,000)
    many = [{"name": "e", "pages": [{"page_number": n} for n in range(9_997)]}]
    too_many = [
        {"name": "e", "pages": [{"page_number": n} for n in range(5_000)]},
        {"name": "f", "pages": [{"page_number": n} for n in range(4_999)]},
    ]  # 10,001
    assert await post_raw(client, "/results", results_body(job_id, too_many)) == (
        413,
        {"message": "Too many results in one upload: 10001 estimators and pages, at most 10000"},
    )
    assert await conn.fetchval("SELECT count(*) FROM pages") == 1
    assert await conn.fetchval("SELECT string_agg(name, ',') FROM estimators") == "keep"
    assert await post_raw(client, "/results", results_body(job_id, many)) == (
        202,
        {"message": "Results saved"},
    )
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pages p JOIN estimators e ON e.id = p.estimator_id"
            " WHERE e.name = 'e'"
        )
        == 9_997
    )


async def test_pages_count_128_bytes_each_in_the_quota(client, conn):
    job_id = await logs_job(client, conn)
    before = await conn.fetchval("SELECT stored_bytes FROM simulations WHERE job_id = $1", job_id)
    pages = [
        {"page_number": n, "name": "ab", "dimensions": 2, "data": {"values": [1, 2]}}
        for n in range(100)
    ]
    assert (
        await post_raw(client, "/results", results_body(job_id, [{"name": "dose", "pages": pages}]))
    )[0] == 202
    after = await conn.fetchval("SELECT stored_bytes FROM simulations WHERE job_id = $1", job_id)
    rows = await conn.fetch(
        "SELECT octet_length(p.data) AS d, octet_length(p.name) AS n, cardinality(p.dimensions) AS c"
        " FROM pages p"
    )
    estimator = await conn.fetchval(
        "SELECT octet_length(name) + octet_length(fields) + 64 FROM estimators"
    )
    assert after - before == estimator + sum(
        r["d"] + r["n"] + 4 * (r["c"] or 0) + 128 for r in rows
    )


# Writing large pieces uncopied; segments inflated 256 KiB at a time


def page_of(n: int, size: int) -> dict:
    values = float_values(size // 22, seed=n)
    return {"page_number": n, "name": f"p{n}", "data": {"values": values}}


async def test_result_bodies_with_pages_around_the_piece_boundaries(client, conn):
    job_id = await logs_job(client, conn)
    sizes = [
        256 << 10,
        (256 << 10) + 1,
        1 << 20,
        (1 << 20) + 7,
        2 << 20,
        (2 << 20) - 3,
        5 << 20,
        100,
    ]
    pages = [page_of(n, size) for n, size in enumerate(sizes)]
    estimators = [{"name": "dose", "pages": pages}, {"name": "small", "pages": [page_of(99, 300)]}]
    assert (await post_raw(client, "/results", results_body(job_id, estimators)))[0] == 202
    expected = {"message": "Results", "estimators": estimators}
    bodies = {}
    for encoding in ("identity", "gzip"):
        for _attempt in range(2):  # assembled/streamed, then from caches or body files
            response = await client.get(
                f"/results?job_id={job_id}",
                headers={"Accept-Encoding": encoding},
                auto_decompress=False,
            )
            raw = await response.read()
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(raw)
            plain = gzip.decompress(raw) if encoding == "gzip" else raw
            assert orjson.loads(plain) == expected
            bodies.setdefault(encoding, plain)
            assert plain == bodies[encoding]
            head = await client.head(
                f"/results?job_id={job_id}", headers={"Accept-Encoding": encoding}
            )
            assert head.status == 200 and head.headers["Content-Length"] == str(len(raw))
    assert bodies["identity"] == bodies["gzip"]
    # single pages too
    for n, _page in enumerate(pages):
        status, body = await get(
            client, f"/results?job_id={job_id}&estimator_name=dose&page_number={n}"
        )
        assert status == 200, body


async def test_a_re_upload_during_a_streamed_fetch_is_never_torn(client, conn):
    job_id = await logs_job(client, conn)
    old = [{"name": "dose", "pages": [page_of(n, 2 << 20) for n in range(8)]}]
    new = [{"name": "dose", "pages": [page_of(n + 50, 3 << 20) for n in range(8)]}]
    assert (await post_raw(client, "/results", results_body(job_id, old)))[0] == 202
    async with client.get(
        f"/results?job_id={job_id}", headers={"Accept-Encoding": "identity"}
    ) as response:
        assert response.status == 200
        first = await response.content.readexactly(1 << 20)
        assert (await post_raw(client, "/results", results_body(job_id, new)))[0] == 202
        try:
            got = orjson.loads(first + await response.read())
        except aiohttp.ClientPayloadError:
            got = None
    if got is not None:
        assert got in (
            {"message": "Results", "estimators": old},
            {"message": "Results", "estimators": new},
        )
