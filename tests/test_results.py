"""POST /results, GET /results and GET /estimators on the real captured result."""

import asyncio
import gzip
import io
import random
import tracemalloc
import zlib

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from server.app import create_app
from server.keys import BODY_CACHE, PAGE_CACHE
from server.results.caches.indexcache import MAX_VIEWS
from server.results.fetch.filters import MAX_PAGES
from tests.helpers import (
    KEY,
    RESULTS,
    answer,
    eventually,
    lock_waiters,
    login,
    reference,
    set_key,
    submit,
    upload,
)

BUMP_RESULTS_VERSION = (
    "UPDATE simulations SET results_version = nextval('page_versions') WHERE job_id = $1"
)


@pytest.fixture
async def job(client, conn) -> str:
    """A submitted job of the logged-in user 'alice', with the fixture's results uploaded."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await upload(client, job_id)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    return job_id


async def get(client, path: str, **params):
    response = await client.get(path, params=params, headers={"Accept-Encoding": "identity"})
    return response.status, await response.json()


async def test_round_trip(client, conn, job):
    assert await get(client, "/results", job_id=job) == (
        200,
        {"message": "Results", "estimators": reference()},
    )
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM estimators) AS e, (SELECT count(*) FROM pages) AS p"
    )
    assert (counts["e"], counts["p"]) == (4, 21)


async def test_gzip_response_equals_identity(client, job):
    identity = await client.get(
        "/results", params={"job_id": job}, headers={"Accept-Encoding": "identity"}
    )
    plain = await identity.read()
    assert "Content-Encoding" not in identity.headers
    response = await client.get(
        "/results",
        params={"job_id": job},
        headers={"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    compressed = await response.read()
    assert len(compressed) < len(plain) / 2
    assert gzip.decompress(compressed) == plain


@pytest.mark.parametrize(
    ("params", "estimator", "numbers"),
    [
        ({"estimator_name": "peak_"}, "peak_", None),
        ({"estimator_name": "yz_profile_"}, "yz_profile_", None),
        ({"page_number": "0"}, None, {0}),
        ({"page_number": "5"}, None, {5}),
        ({"page_numbers": "1-3,5"}, None, {1, 2, 3, 5}),
        ({"page_numbers": "0"}, None, {0}),
        ({"page_numbers": "3-3"}, None, {3}),
        ({"page_numbers": "6,0-1"}, None, {0, 1, 6}),
        ({"page_numbers": "100-200"}, None, set()),
        ({"estimator_name": "entrance_", "page_numbers": "1-3,5"}, "entrance_", {1, 2, 3, 5}),
        ({"estimator_name": "z_profile_", "page_number": "3"}, "z_profile_", {3}),
        ({"estimator_name": "yz_profile_", "page_number": "4"}, "yz_profile_", {4}),
    ],
)
async def test_filters(client, job, params, estimator, numbers):
    for encoding in ("identity", "gzip"):
        response = await client.get(
            "/results", params={"job_id": job, **params}, headers={"Accept-Encoding": encoding}
        )
        assert response.status == 200
        assert await response.json() == {
            "message": "Results",
            "estimators": reference(estimator, numbers),
        }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page_numbers": "a"}, "Invalid page_numbers: 'a' is not a number or a range like 1-3"),
        ({"page_numbers": "3-1"}, "Invalid page_numbers: the range '3-1' is reversed"),
        ({"page_numbers": "1,,2"}, "Invalid page_numbers: '' is not a number or a range like 1-3"),
        ({"page_numbers": "-1"}, "Invalid page_numbers: '-1' is not a number or a range like 1-3"),
        ({"page_numbers": "1-"}, "Invalid page_numbers: '1-' is not a number or a range like 1-3"),
        ({"page_numbers": ""}, "Invalid page_numbers: '' is not a number or a range like 1-3"),
        ({"page_numbers": "0-10000"}, "Invalid page_numbers: more than 10000 pages"),
        ({"page_numbers": "0-99999999999"}, "Invalid page_numbers: more than 10000 pages"),
        ({"page_number": "-1"}, "Invalid page_number: must be a non-negative integer"),
        ({"page_number": "x"}, "Invalid page_number: must be a non-negative integer"),
        (
            {"page_number": "1", "page_numbers": "1"},
            "Give either page_number or page_numbers, not both",
        ),
    ],
)
async def test_bad_page_specs(client, job, params, message):
    assert await get(client, "/results", job_id=job, **params) == (400, {"message": message})


async def test_blanks_around_page_numbers_are_ignored(client, job):
    """As the README says, for one page too: `page_number= 4` was a 400."""
    expected = await get(client, "/results", job_id=job, page_numbers="1")
    for params in ({"page_number": " 1"}, {"page_number": "1 "}, {"page_numbers": " 1"}):
        assert await get(client, "/results", job_id=job, **params) == expected
    assert expected[0] == 200


@pytest.mark.parametrize("name", ["page_numbers", "page_number"])
@pytest.mark.parametrize("path", ["/results", "/ui/results"])
async def test_a_page_filter_given_twice_is_400(client, job, name, path):
    """`page_numbers=1&page_numbers=2` (how some clients send a list) got page 1 alone."""
    query = f"?job_id={job}&estimator_name=z_profile&{name}=1&{name}=2"
    response = await client.get(path + query)
    answer = {"message": f"Invalid {name}: given more than once"}
    assert (response.status, await response.json()) == (400, answer)


async def test_results_are_private_and_revalidated(client, conn, job):
    """A user's results behind a cookie: no shared cache may keep them (a proxy cache in front
    would hand them to the next user of the URL); the browser revalidates its copy (ETag)."""
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED', end_time = now()")
    for encoding in ("identity", "gzip"):
        headers = {"Accept-Encoding": encoding}
        response = await client.get(f"/results?job_id={job}", headers=headers)
        assert response.headers["Cache-Control"] == "private, no-cache"
        headers["If-None-Match"] = response.headers["ETag"]
        response = await client.get(f"/results?job_id={job}", headers=headers)
        assert (response.status, response.headers["Cache-Control"]) == (304, "private, no-cache")


async def test_largest_spec_allowed(client, job):
    status, body = await get(client, "/results", job_id=job, page_numbers="0-9999")
    assert (status, body) == (200, {"message": "Results", "estimators": reference()})


@pytest.mark.parametrize("spec", ["0-9999,0-9999", "0-5000,5000-9999", "0-9999,7"])
async def test_overlapping_parts_of_a_spec_count_once(client, job, spec):
    """api.md: 400 for a spec that *expands to* more than 10,000 pages; these expand to 10,000."""
    status, body = await get(client, "/results", job_id=job, page_numbers=spec)
    assert (status, body) == (200, {"message": "Results", "estimators": reference()})


async def test_not_found_cases(client, conn):
    await login(client)
    job_id = await submit(client)
    assert await get(client, "/results", job_id=job_id) == (
        404,
        {"message": "Results not available"},
    )
    assert await get(client, "/estimators", job_id=job_id) == (
        404,
        {"message": "Results not available"},
    )
    assert await get(client, "/results", job_id="nope") == (
        404,
        {"message": "Simulation not found"},
    )
    assert await get(client, "/estimators", job_id="nope") == (
        404,
        {"message": "Simulation not found"},
    )
    assert await get(client, "/results") == (400, {"message": "Missing job_id"})
    assert await get(client, "/estimators") == (400, {"message": "Missing job_id"})


async def test_unknown_estimator(client, job):
    assert await get(client, "/results", job_id=job, estimator_name="nope") == (
        404,
        {"message": "Estimator not found: nope"},
    )


async def test_other_users_results(client, job):
    client.session.cookie_jar.clear()
    await login(client, "mallory")
    forbidden = (403, {"message": "Simulation belongs to another user"})
    assert await get(client, "/results", job_id=job) == forbidden
    assert await get(client, "/results", job_id=job, estimator_name="nope") == forbidden
    assert await get(client, "/estimators", job_id=job) == forbidden


async def test_estimators(client, job):
    expected = [
        {
            "name": entry["name"],
            "pages": [
                {
                    "page_number": number,
                    "name": page["metadata"]["name"],
                    "dimensions": dims,
                }
                for number, page, dims in sorted(
                    (
                        int(page["metadata"]["page_number"]),
                        page,
                        [
                            len(page[axis]["values"])
                            for axis in ("axis_dim1", "axis_dim2", "axis_dim3")
                            if axis in page
                        ]
                        or [len(page["data"]["values"])],
                    )
                    for page in entry["pages"]
                )
            ],
        }
        for entry in RESULTS["estimators"]
    ]
    status, body = await get(client, "/estimators", job_id=job)
    assert (status, body) == (200, {"message": "Estimators", "estimators": expected})
    assert body["estimators"][0]["pages"][0]["dimensions"] == [80, 400]


async def test_seed_example(client, conn):
    """The page shape of the seed: page_number and name at the top, data.dimensions as axes."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    page1 = {
        "page_number": 1,
        "name": "Z (Dose)",
        "data": {"values": [0.0, 0.001, 0.015], "dimensions": [[0.0, 0.5, 1.0]], "unit": "Gy"},
    }
    page2 = {**page1, "page_number": 2, "name": "Z (Fluence)"}
    response = await upload(client, job_id, [{"name": "Detector0", "pages": [page2, page1]}])
    assert response.status == 202
    assert await get(client, "/results", job_id=job_id) == (
        200,
        {"message": "Results", "estimators": [{"name": "Detector0", "pages": [page1, page2]}]},
    )
    assert await get(client, "/estimators", job_id=job_id) == (
        200,
        {
            "message": "Estimators",
            "estimators": [
                {
                    "name": "Detector0",
                    "pages": [
                        {"page_number": 1, "name": "Z (Dose)", "dimensions": [3]},
                        {"page_number": 2, "name": "Z (Fluence)", "dimensions": [3]},
                    ],
                }
            ],
        },
    )


async def test_reupload_replaces(client, conn, job):
    changed = {"page_number": 0, "name": "NEW", "data": {"values": [1.5]}}
    extra = {"page_number": 9, "name": "EXTRA", "data": {"values": [2]}}
    response = await upload(client, job, [{"name": "peak_", "pages": [changed, extra]}])
    assert response.status == 202
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 4
    assert await conn.fetchval("SELECT count(*) FROM pages") == 22
    status, body = await get(client, "/results", job_id=job, estimator_name="peak_")
    assert status == 200
    pages = body["estimators"][0]["pages"]
    assert pages[0] == changed and pages[-1] == extra and len(pages) == 8
    response = await upload(client, job)  # the whole fixture again
    assert response.status == 202
    assert await conn.fetchval("SELECT count(*) FROM pages") == 22
    status, body = await get(client, "/results", job_id=job, estimator_name="peak_")
    assert status == 200
    assert body["estimators"][0]["pages"] == [*reference("peak_")[0]["pages"], extra]


async def test_failing_upload_stores_nothing(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    good = {"name": "first", "pages": [{"page_number": 1, "data": {"values": [1]}}]}
    dup = {"page_number": 2, "data": {"values": [1]}}
    response = await upload(client, job_id, [good, {"name": "second", "pages": [dup, dup]}])
    assert (response.status, await response.json()) == (
        400,
        {"message": "Duplicate page number 2 in estimator 'second'"},
    )
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
    assert await conn.fetchval("SELECT count(*) FROM pages") == 0


@pytest.mark.parametrize(
    ("estimators", "count"),
    [
        ([{"name": "z", "pages": [{"page_number": n} for n in range(10_000)]}], 10_001),
        ([{"name": f"e{n}"} for n in range(10_001)], 10_001),
    ],
)
async def test_an_upload_of_over_ten_thousand_pages_and_estimators_is_413(
    client, conn, estimators, count
):
    """Each costs ~1 KB in memory while it is stored, however small (a real result has tens to
    hundreds): 400,000 tiny pages in 9 MB took 300 MiB."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await upload(client, job_id, estimators)
    message = f"Too many results in one upload: {count} estimators and pages, at most 10000"
    assert (response.status, await response.json()) == (413, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_a_simulation_holds_at_most_ten_thousand_pages_and_estimators(client, conn):
    """Uploads of new estimators added up without bound (600,000 one-value pages in a minute),
    and every fetch of such a result read its whole index on the event loop: seconds each.
    Past the bound an upload is 413 and stores nothing; a re-upload that replaces pages is
    not counted twice."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)

    def estimator(name: str, pages: int) -> dict:
        return {"name": name, "pages": [{"page_number": n, "data": [n]} for n in range(pages)]}

    assert (await upload(client, job_id, [estimator("a", 4999)])).status == 202
    assert (await upload(client, job_id, [estimator("b", 4999)])).status == 202
    assert (await upload(client, job_id, [estimator("b", 4999)])).status == 202  # replaced
    response = await upload(client, job_id, [estimator("c", 1)])
    message = "Too many results: at most 10000 estimators and pages per simulation"
    assert (response.status, await response.json()) == (413, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM pages") == 9998
    assert await conn.fetch("SELECT name FROM estimators ORDER BY name") == [("a",), ("b",)]


@pytest.mark.parametrize(
    ("estimators", "message"),
    [
        ("x", "Field estimators must be of type array"),
        ({}, "Field estimators must be of type array"),
        ([{"pages": []}], "Invalid estimators[0]: needs a non-empty string name"),
        ([{"name": "a", "pages": {}}], "Invalid estimator 'a': pages must be an array"),
        (
            [{"name": "a", "pages": [{"data": {}}]}],
            "Invalid page in estimator 'a': no integer page_number",
        ),
        (
            [{"name": "a", "pages": [{"page_number": "x"}]}],
            "Invalid page in estimator 'a': no integer page_number",
        ),
        (
            [{"name": "a", "pages": []}, {"name": "a", "pages": []}],
            "Duplicate estimator name in one upload",
        ),
    ],
)
async def test_bad_uploads(client, conn, estimators, message):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await upload(client, job_id, estimators)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_upload_auth(client, conn):
    await login(client)
    job_id = await submit(client)
    other = await submit(client)
    await set_key(conn, job_id)
    await set_key(conn, other, "the other key")
    pages = [{"name": "a", "pages": []}]
    response = await upload(client, job_id, pages, key="wrong")
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})
    response = await upload(client, job_id, pages, key="the other key")
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})
    response = await upload(client, "no-such-job", pages)
    assert (response.status, await response.json()) == (404, {"message": "Simulation not found"})
    body = orjson.dumps({"simulation_id": job_id, "estimators": pages})
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})
    response = await client.post("/results", data=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status == 202
    response = await client.post("/results", data=b"{not json")
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    await conn.execute("UPDATE simulations SET job_state = 'CANCELED' WHERE job_id = $1", job_id)
    response = await upload(client, job_id, [{"name": "b", "pages": []}])
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is CANCELED: no more updates are accepted"},
    )
    assert await conn.fetchval("SELECT count(*) FROM estimators WHERE name = 'b'") == 0


async def test_gzip_upload(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": RESULTS["estimators"]}
    )
    response = await client.post(
        "/results", data=gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    assert response.status == 202
    assert await get(client, "/results", job_id=job_id) == (
        200,
        {"message": "Results", "estimators": reference()},
    )


async def test_worker_body_limit(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(server={"worker_max_body_size": 1000})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await upload(client, job_id)
    assert (response.status, await response.json()) == (
        413,
        {"message": "Request body larger than 1000 bytes"},
    )


async def test_upload_completes_job(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    await conn.execute("UPDATE tasks SET task_state = 'COMPLETED'")
    await conn.execute("UPDATE simulations SET job_state = 'MERGING_QUEUED'")
    assert (await upload(client, job_id)).status == 202
    row = await conn.fetchrow("SELECT job_state, end_time FROM simulations")
    assert row["job_state"] == "COMPLETED" and row["end_time"] is not None


async def test_etag_and_304(client, conn, job):
    plain = {"Accept-Encoding": "identity"}
    response = await client.get("/results", params={"job_id": job}, headers=plain)
    assert "ETag" not in response.headers  # still running: results may change
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED', end_time = now()")
    response = await client.get("/results", params={"job_id": job}, headers=plain)
    etag = response.headers["ETag"]
    full = await response.read()
    response = await client.get(
        "/results", params={"job_id": job}, headers={**plain, "If-None-Match": etag}
    )
    assert response.status == 304 and await response.read() == b""
    assert response.headers["ETag"] == etag
    zipped = await client.get(
        "/results",
        params={"job_id": job},
        headers={"Accept-Encoding": "gzip", "If-None-Match": etag},
        auto_decompress=False,
    )
    assert zipped.status == 200 and zipped.headers["ETag"] != etag
    assert gzip.decompress(await zipped.read()) == full
    response = await client.get(
        "/results",
        params={"job_id": job},
        headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]},
    )
    assert response.status == 304
    filtered = await client.get(
        "/results",
        params={"job_id": job, "page_number": "1"},
        headers={**plain, "If-None-Match": etag},
    )
    assert filtered.status == 200 and filtered.headers["ETag"] != etag


async def test_if_none_match_over_several_header_lines_is_one_list(client, conn, job):
    """RFC 9110, 5.3: field lines of one name are one comma-separated list (proxies and caches
    may split or join them): the ETag on the second line must be seen."""
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED', end_time = now()")
    plain = {"Accept-Encoding": "identity"}
    etag = (await client.get("/results", params={"job_id": job}, headers=plain)).headers["ETag"]
    headers = CIMultiDict([*plain.items(), ("If-None-Match", '"old"'), ("If-None-Match", etag)])
    response = await client.get("/results", params={"job_id": job}, headers=headers)
    assert response.status == 304 and response.headers["ETag"] == etag


async def test_large_results_are_read_in_batches(aiohttp_client, make_config, conn, monkeypatch):
    """Large results: pages missing from the cache are read a few at a time (BATCH_BYTES) and
    the body is streamed in pieces (past SINGLE_WRITE), here without any cache."""
    from server.results.caches import pagecache
    from server.results.fetch import render

    monkeypatch.setattr(pagecache, "BATCH_BYTES", 50_000)
    monkeypatch.setattr(render, "SINGLE_WRITE", 0)
    monkeypatch.setattr(render, "FLUSH_AT", 10_000)
    client = await aiohttp_client(create_app(make_config(server={"page_cache_size": 0})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    for _ in range(2):
        assert await get(client, "/results", job_id=job_id) == (
            200,
            {"message": "Results", "estimators": reference()},
        )
    response = await client.get("/results", params={"job_id": job_id, "page_numbers": "1-3,5"})
    assert await response.json() == {
        "message": "Results",
        "estimators": reference(numbers={1, 2, 3, 5}),
    }
    for encoding in ("identity", "gzip"):  # streamed with their exact length, not chunked
        _, headers, body = await answer(client, job_id, encoding)
        assert "Transfer-Encoding" not in headers
        assert int(headers["Content-Length"]) == len(body)
        raw = gzip.decompress(body) if encoding == "gzip" else body
        assert orjson.loads(raw) == {"message": "Results", "estimators": reference()}


async def rewritten_before_read(
    aiohttp_client, make_config, conn, monkeypatch, headers: dict[str, str]
) -> tuple[aiohttp.ClientResponse, TestClient, str, bytes]:
    """A fetch of a streamed body during which page 0 is rewritten, as a re-upload does, after
    the index was read and before the page's data: its response, the client, the job_id and
    the new page."""
    from server.results.deflate import crc_shift, encode_segment
    from server.results.fetch import render

    monkeypatch.setattr(render, "SINGLE_WRITE", 0)
    client = await aiohttp_client(create_app(make_config(server={"page_cache_size": 0})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    assert (await get(client, "/results", job_id=job_id))[0] == 200  # the index is cached
    new = orjson.dumps({"page_number": 0, "name": "NEW", "data": {"values": [7]}})
    async with conn.transaction():
        await conn.execute("LOCK TABLE pages IN ACCESS EXCLUSIVE MODE")
        params = {"job_id": job_id}
        fetch = asyncio.ensure_future(client.get("/results", params=params, headers=headers))
        await eventually(lambda: lock_waiters(conn))  # the stream waits for the page data
        await conn.execute(
            "UPDATE pages SET data = $1, raw_size = $2, crc32 = $3, crc_shift = $4,"
            " version = nextval('page_versions') WHERE page_number = 0 AND estimator_id ="
            " (SELECT min(id) FROM estimators)",
            encode_segment(new),
            len(new),
            zlib.crc32(new),
            crc_shift(len(new)),
        )  # as an upload does, in the same transaction:
        await conn.execute(BUMP_RESULTS_VERSION, job_id)
    return await fetch, client, job_id, new


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_pages_rewritten_before_a_streamed_body_began_are_a_503_to_retry(
    aiohttp_client, make_config, conn, monkeypatch, encoding
):
    """A streamed body has a Content-Length made from the index: if a page is rewritten between
    the index and its data (a running simulation's re-upload) before anything was sent (the
    headers wait for the body's first piece), the answer is a 503 to retry, as for a body sent
    whole; the next fetch has the new page."""
    response, client, job_id, new = await rewritten_before_read(
        aiohttp_client, make_config, conn, monkeypatch, {"Accept-Encoding": encoding}
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {"message": "Results changed while they were read, retry"}
    status, body = await get(client, "/results", job_id=job_id)
    assert status == 200 and body["estimators"][0]["pages"][0] == orjson.loads(new)


async def test_pages_rewritten_while_streamed_close_the_connection(
    aiohttp_client, make_config, conn, monkeypatch
):
    """Once a streamed body has begun (here its gzip header, sent at once), a page rewritten
    before its data was read ends it: the client gets an incomplete body (the connection is
    closed), never a torn one; the next fetch has the new page."""
    from server.results.fetch import writing

    monkeypatch.setattr(writing, "FIRST_FLUSH", 1)
    response, client, job_id, new = await rewritten_before_read(
        aiohttp_client, make_config, conn, monkeypatch, {"Accept-Encoding": "gzip"}
    )
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    status, body = await get(client, "/results", job_id=job_id)
    assert status == 200 and body["estimators"][0]["pages"][0] == orjson.loads(new)


async def test_rewritten_pages_are_not_served_from_cache(client, job):
    """Cached pages and bodies are keyed by page versions: a re-upload is served at once."""
    before = await get(client, "/results", job_id=job)
    assert before == await get(client, "/results", job_id=job)  # the second from the cache
    assert client.app[BODY_CACHE].size > 0 and client.app[PAGE_CACHE].size > 0
    new = {"page_number": 0, "name": "NEW", "data": {"values": [7]}}
    assert (await upload(client, job, [{"name": "peak_", "pages": [new]}])).status == 202
    status, body = await get(client, "/results", job_id=job)
    assert status == 200 and body["estimators"][3]["pages"][0] == new  # peak_ stays last
    assert body["estimators"][:3] == before[1]["estimators"][:3]
    for encoding in ("identity", "gzip"):
        response = await client.get(
            "/results",
            params={"job_id": job, "estimator_name": "peak_", "page_number": "0"},
            headers={"Accept-Encoding": encoding},
        )
        assert await response.json() == {
            "message": "Results",
            "estimators": [{"name": "peak_", "pages": [new]}],
        }


async def test_estimators_uploaded_in_parts_keep_their_order(client, conn):
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    page = {"page_number": 1, "data": {"values": [1]}}
    assert (await upload(client, job_id, [{"name": "b", "pages": [page]}])).status == 202
    parts = [{"name": name, "pages": [page]} for name in ("c", "b", "a")]
    assert (await upload(client, job_id, parts)).status == 202
    status, body = await get(client, "/results", job_id=job_id)
    assert status == 200
    assert [estimator["name"] for estimator in body["estimators"]] == ["b", "c", "a"]


async def test_changed_estimator_fields_are_not_served_from_cache(client, job):
    """An upload may change only an estimator's own fields (no page is rewritten): the cached
    body, keyed by the results version too, is not served again."""
    status, before = await get(client, "/results", job_id=job)
    assert status == 200 and (await get(client, "/results", job_id=job))[1] == before
    changed = {"name": "peak_", "metadata": {"note": "changed"}, "pages": []}
    assert (await upload(client, job, [changed])).status == 202
    status, body = await get(client, "/results", job_id=job)
    assert status == 200 and body["estimators"][3]["metadata"] == {"note": "changed"}
    assert body["estimators"][3]["pages"] == before["estimators"][3]["pages"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_estimators_without_pages_are_served(client, conn, monkeypatch, streamed):
    """An estimator stored without pages is in the results like in /estimators, with its own
    fields and `"pages": []`; only a page filter leaves it out."""
    from server.results.fetch import render

    if streamed:
        monkeypatch.setattr(render, "SINGLE_WRITE", 0)
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    page = {"page_number": 1, "data": {"values": [1]}}
    estimators = [
        {"name": "a", "metadata": {"unit": "Gy"}, "pages": []},
        {"name": "b", "pages": [page]},
        {"name": "c", "pages": []},
    ]
    assert (await upload(client, job_id, estimators)).status == 202
    assert await get(client, "/results", job_id=job_id) == (
        200,
        {"message": "Results", "estimators": estimators},
    )
    assert await get(client, "/results", job_id=job_id, estimator_name="a") == (
        200,
        {"message": "Results", "estimators": estimators[:1]},
    )
    assert await get(client, "/results", job_id=job_id, page_number="1") == (
        200,
        {"message": "Results", "estimators": [estimators[1]]},
    )
    plain = await client.get(
        "/results", params={"job_id": job_id}, headers={"Accept-Encoding": "identity"}
    )
    zipped = await client.get(
        "/results",
        params={"job_id": job_id},
        headers={"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    body = await plain.read()
    assert int(plain.headers["Content-Length"]) == len(body)
    assert gzip.decompress(await zipped.read()) == body


def two_pages(value: int) -> list:
    """An estimator of pages 1 and 2 holding `value`: the same sizes for any one digit."""
    return [{"name": "e", "pages": [{"page_number": n, "v": [value]} for n in (1, 2)]}]


def reupload_at_first_read(
    monkeypatch, client, job_id: str, before: bool, estimators: list | None = None
) -> None:
    """The first read of page data from the database comes with an upload rewriting both
    pages (`estimators`, else `two_pages(2)`), just before or just after it."""
    from server.store import results as stored

    real, calls = stored.page_data, []
    estimators = estimators or two_pages(2)

    async def page_data(db, refs):
        calls.append(refs)
        if len(calls) == 1 and before:
            assert (await upload(client, job_id, estimators)).status == 202
        found = await real(db, refs)
        if len(calls) == 1 and not before:
            assert (await upload(client, job_id, estimators)).status == 202
        return found

    monkeypatch.setattr(stored, "page_data", page_data)


async def rewritten_while_streamed(
    aiohttp_client, make_config, conn, monkeypatch, first: list, second: list
) -> tuple:
    """A server streaming every body, a page at a time, with no page cache: (client, job_id) of
    a running simulation holding `first`, rewritten with `second` once its first page was read
    by the next fetch."""
    from server.results.caches import pagecache
    from server.results.fetch import render

    monkeypatch.setattr(render, "SINGLE_WRITE", 0)
    monkeypatch.setattr(pagecache, "FIRST_BATCH", 1)  # one page per batch
    monkeypatch.setattr(pagecache, "BATCH_BYTES", 1)
    client = await aiohttp_client(create_app(make_config(server={"page_cache_size": 0})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id, first)).status == 202
    assert (await get(client, "/results", job_id=job_id))[0] == 200  # the index is cached
    reupload_at_first_read(monkeypatch, client, job_id, False, second)  # after page 1's read
    return client, job_id


async def test_pages_rewritten_to_the_same_size_while_streamed_are_not_torn(
    aiohttp_client, make_config, conn, monkeypatch
):
    """An upload rewrites two pages (same sizes) between the streaming of the first and the
    reading of the second: the client must not get a complete body holding page 1 from before
    that upload and page 2 from after it."""
    client, job_id = await rewritten_while_streamed(
        aiohttp_client, make_config, conn, monkeypatch, two_pages(1), two_pages(2)
    )
    response = await client.get(
        "/results", params={"job_id": job_id}, headers={"Accept-Encoding": "identity"}
    )
    try:
        body = orjson.loads(await response.read())
    except aiohttp.ClientPayloadError:
        return  # an incomplete body: what the docstring of writing.stream promises
    if response.status == 503:  # page 1 not sent yet (a piece waits for 64 KiB): to retry
        assert body == {"message": "Results changed while they were read, retry"}
        return
    values = [page["v"] for page in body["estimators"][0]["pages"]]
    assert values in ([[1], [1]], [[2], [2]])


def noisy_pages(seed: int) -> list:
    """Pages 1 and 2 of 20,000 random values each (about 380 KB of JSON, 170 KB stored): each
    page's bytes leave the server on their own, gzip or not."""
    rng = random.Random(seed)
    pages = [{"page_number": n, "v": [rng.random() for _ in range(20_000)]} for n in (1, 2)]
    return [{"name": "e", "pages": pages}]


async def fetch_raw(client, job_id: str, encoding: str) -> tuple[int, bytes]:
    """`GET /results` on a connection of its own: the Content-Length, and the body's bytes
    received until the server closed the connection."""
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n"
        f"Cookie: access_token={jar['access_token'].value}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    body = await asyncio.wait_for(reader.read(), 10)  # to the end: the server closes
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length:"))
    return int(length.split(b":")[1]), body


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_streamed_body_cut_short_by_a_rewrite_is_no_whole_document(
    aiohttp_client, make_config, conn, monkeypatch, encoding
):
    """A streamed body whose page 2 was rewritten after page 1 was sent ends where it was cut:
    with no closing brackets and (gzip) no trailer, so that a client that reads to the end of
    the connection without checking its length cannot take page 1 alone for the results."""
    client, job_id = await rewritten_while_streamed(
        aiohttp_client, make_config, conn, monkeypatch, noisy_pages(1), noisy_pages(2)
    )
    length, body = await fetch_raw(client, job_id, encoding)
    assert 64 << 10 < len(body) < length  # page 1 was sent, page 2 was not
    if encoding == "gzip":
        with pytest.raises(zlib.error, match="incomplete or truncated"):
            zlib.decompress(body, 31)
        body = zlib.decompressobj(31).decompress(body)
    assert body.startswith(b'{"message":"Results","estimators":[{"name":"e","pages":[{')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_pages_rewritten_while_an_assembled_body_is_read_are_not_torn(client, conn):
    """Like the streamed case, for a small body (assembled in memory): page 1 comes from the
    page cache, page 2 is read after an upload rewrote both pages. The client must not get a
    complete 200 body holding page 1 from before that upload and page 2 from after it."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id, two_pages(1))).status == 202
    # Page 1 alone is read (and cached), and so is the index of the running simulation.
    assert (await get(client, "/results", job_id=job_id, page_numbers="1"))[0] == 200
    with pytest.MonkeyPatch.context() as monkeypatch:
        reupload_at_first_read(monkeypatch, client, job_id, before=True)  # before page 2's
        status, body = await get(client, "/results", job_id=job_id)
    if status == 200:
        values = [page["v"] for page in body["estimators"][0]["pages"]]
        assert values in ([[1], [1]], [[2], [2]])
    else:  # refused as changed while read: a retry gets the new pages whole
        assert status == 503, body
        status, body = await get(client, "/results", job_id=job_id)
        assert [page["v"] for page in body["estimators"][0]["pages"]] == [[2], [2]]


@pytest.mark.parametrize(
    "accept",
    [
        ["*, gzip;q=0"],  # gzip refused by name; anything else (identity) welcome
        ["*;q=0.5, gzip;q=0"],
        ["gzip;Q=0"],  # the weight's name is case-insensitive (RFC 9110, 12.4.2)
        ["gzip;q=0."],  # a valid qvalue: "0" [ "." 0*3DIGIT ]
        ["*", "gzip;q=0"],  # two header lines are one list (RFC 9110, 5.3)
    ],
)
async def test_gzip_refused_by_the_client_is_not_sent(client, job, accept):
    headers = CIMultiDict(("Accept-Encoding", value) for value in accept)
    response = await client.get(
        "/results", params={"job_id": job}, headers=headers, auto_decompress=False
    )
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert orjson.loads(await response.read())["estimators"] == reference()


async def test_page_filters_asked_for_do_not_fill_memory(client, job):
    """page_numbers specs are the client's choice: the views remembered for them must not keep
    every page number they name (10,000 from a spec of 6 characters)."""
    assert (await get(client, "/results", job_id=job))[0] == 200  # the index is read
    tracemalloc.start()
    try:
        for last in range(MAX_PAGES - 1, MAX_PAGES - 1 - MAX_VIEWS, -1):  # each names every page
            spec = f"0-{last}"
            assert (await get(client, "/results", job_id=job, page_numbers=spec))[0] == 200
        kept = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/server/*")])
    finally:
        tracemalloc.stop()
    retained = sum(stat.size for stat in kept.statistics("filename"))
    assert retained < 1 << 20, f"{retained / 2**20:.1f} MB kept for one simulation of 21 pages"


async def test_accept_encoding_values_asked_with_do_not_fill_memory(client, job):
    """Accept-Encoding is the client's choice too: up to 128 header lines of 8 KB each (aiohttp's
    limits), joined into one value, ~1 MB a request. Remembering the answer for every distinct
    value (256 of them) kept them all: 300 such GETs left 240 MB in a real server's RSS."""
    assert (await get(client, "/results", job_id=job))[0] == 200  # the index is read
    tracemalloc.start()
    try:
        for number in range(40):
            lines = [f"gzip, x-{number}-{line}-" + "a" * 8000 for line in range(100)]
            headers = CIMultiDict(("Accept-Encoding", value) for value in lines)
            response = await client.get("/results", params={"job_id": job}, headers=headers)
            assert response.status == 200
            await response.read()
        kept = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/server/*")])
    finally:
        tracemalloc.stop()
    retained = sum(stat.size for stat in kept.statistics("filename"))
    assert retained < 1 << 20, f"{retained / 2**20:.1f} MB kept after 40 GETs of one simulation"


async def test_a_body_made_large_by_estimator_fields_is_streamed(client, conn):
    """README: bodies over 2 MiB are streamed, memory flat however large the result; only
    bodies up to 2 MiB are assembled and kept in the body cache. An estimator's own fields
    (`metadata`, of any size a worker sends) are part of the body: they count toward its size,
    and are sent a piece at a time."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    metadata = {"note": "x" * (12 << 20)}
    estimators = [{"name": "a", "metadata": metadata, "pages": [{"page_number": 0, "v": [1]}]}]
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "estimators": estimators})
    assert (await client.post("/results", data=io.BytesIO(body))).status == 202
    assert (await get(client, "/results", job_id=job_id, page_number="9"))[0] == 200  # the index
    cached = client.app[BODY_CACHE].size  # an empty body's
    for encoding in ("identity", "gzip"):
        tracemalloc.start()
        try:
            response = await client.get(
                "/results",
                params={"job_id": job_id},
                headers={"Accept-Encoding": encoding},
                auto_decompress=False,
            )
            length = 0
            while piece := await response.content.read(1 << 16):  # not kept: the server's memory
                length += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert int(response.headers["Content-Length"]) == length
        assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB to send {length / 2**20:.1f} MiB"
    kept = client.app[BODY_CACHE].size - cached
    assert kept == 0, f"a body of {length >> 20} MiB assembled and cached ({kept >> 20} MiB)"
    for encoding in ("identity", "gzip"):
        response = await client.get(
            "/results", params={"job_id": job_id}, headers={"Accept-Encoding": encoding}
        )
        assert await response.json() == {"message": "Results", "estimators": estimators}


async def test_every_page_stored_can_be_asked_for(client, conn):
    """GET /results and the UI dialect refuse a negative page number (spec/api.md: 400), so
    a page stored under one could be listed by /estimators but never fetched by number: an
    upload must not store it."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    pages = [{"page_number": -1, "v": [1]}, {"metadata": {"page_number": "-2"}, "v": [2]}]
    for page in pages:
        response = await upload(client, job_id, [{"name": "a", "pages": [page]}])
        assert response.status == 400, await get(client, "/estimators", job_id=job_id)
        assert await response.json() == {
            "message": "Invalid page in estimator 'a': page_number must not be negative"
        }
    assert await conn.fetchval("SELECT count(*) FROM pages") == 0


# --- server/results/fetch/filters.py: page numbers are PostgreSQL integers -------------------


async def test_largest_page_number_is_an_empty_selection(client, job):
    """2**31 - 1 is a page number like any other (no such page here: no pages)."""
    for params in ({"page_number": "2147483647"}, {"page_numbers": "2147483647"}):
        assert await get(client, "/results", job_id=job, **params) == (
            200,
            {"message": "Results", "estimators": reference(None, set())},
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page_number": "2147483648"}, "Invalid page_number: must be a non-negative integer"),
        ({"page_numbers": "2147483648"}, "Invalid page_numbers: page number too large"),
        (
            {"page_numbers": "1,2147483640-2147483648"},
            "Invalid page_numbers: page number too large",
        ),
    ],
)
async def test_page_number_past_int32_is_400(client, job, params, message):
    """Past 2**31 - 1 a page number cannot be stored: 400 naming the parameter, not a 500."""
    assert await get(client, "/results", job_id=job, **params) == (400, {"message": message})


# --- server/results/fetch/negotiation.py: which Accept-Encoding values take gzip, If-None-Match


async def fetched_with(client, job: str, accept: str):
    """GET /results of `job` with this Accept-Encoding, its body as sent."""
    headers = {"Accept-Encoding": accept}
    return await client.get(
        "/results", params={"job_id": job}, headers=headers, auto_decompress=False
    )


@pytest.mark.parametrize("accept", ["x-gzip", "*", "identity;q=0.5, *", "gzip;q=abc"])
async def test_gzip_is_sent_to_clients_that_take_it(client, job, accept):
    """x-gzip is gzip (RFC 9110, 8.4.1.3); `*` takes any coding; a weight that is not a number
    counts as 1 (negotiation._weight)."""
    plain = await (await fetched_with(client, job, "identity")).read()
    response = await fetched_with(client, job, accept)
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await response.read()) == plain


@pytest.mark.parametrize("accept", ["br", "identity", "x-gzip;q=0", "br, *;q=0"])
async def test_gzip_is_not_sent_to_clients_that_do_not_take_it(client, job, accept):
    response = await fetched_with(client, job, accept)
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert orjson.loads(await response.read()) == {"message": "Results", "estimators": reference()}


@pytest.mark.parametrize("if_none_match", ["*", "W/{etag}", '"other", W/{etag}', " {etag} "])
async def test_if_none_match_star_and_weak_tags_get_304(client, conn, job, if_none_match):
    """If-None-Match compares weakly (RFC 9110, 13.1.2): `W/"x"` matches `"x"`; `*` matches
    any current representation."""
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED', end_time = now()")
    plain = {"Accept-Encoding": "identity"}
    etag = (await client.get("/results", params={"job_id": job}, headers=plain)).headers["ETag"]
    headers = {**plain, "If-None-Match": if_none_match.format(etag=etag)}
    response = await client.get("/results", params={"job_id": job}, headers=headers)
    assert (response.status, await response.read()) == (304, b"")
    assert response.headers["ETag"] == etag


async def test_if_none_match_on_a_running_simulation_is_ignored(client, job):
    """A running simulation's results may change: no ETag, and even `*` gets the full body."""
    headers = {"Accept-Encoding": "identity", "If-None-Match": "*"}
    response = await client.get("/results", params={"job_id": job}, headers=headers)
    assert response.status == 200 and "ETag" not in response.headers
    assert await response.json() == {"message": "Results", "estimators": reference()}
