"""A whole small result is read with its index, in one query (IndexCache.read in
server/results/caches/indexcache.py): what each kind of `GET /results` reads from the database,
with the caches off (each fetch reads everything it sends) and on."""

import gzip

import orjson
import pytest

from server.app import create_app
from server.results.caches import pagecache
from server.results.caches.indexcache import IndexCache
from server.store import results as stored
from tests.helpers import login, reference, set_key, submit, upload

COLD = {"page_cache_size": 0, "body_cache_size": 0, "index_cache_size": 0}
FULL = {"message": "Results", "estimators": reference()}
PAGES = sum(len(estimator["pages"]) for estimator in reference())


class Reads:
    """What the server read: for each index read, how many pages' data came with it; the
    pages of each page data query."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.with_index: list[int] = []
        self.page_data: list[int] = []
        read_index, page_data = stored.read_index, stored.page_data

        async def counted_index(db, job_id, data_up_to=0):
            found = await read_index(db, job_id, data_up_to)
            self.with_index.append(len(found.pages))
            return found

        async def counted_pages(db, pages):
            self.page_data.append(len(pages))
            return await page_data(db, pages)

        monkeypatch.setattr(stored, "read_index", counted_index)
        monkeypatch.setattr(stored, "page_data", counted_pages)


def handed_over(monkeypatch: pytest.MonkeyPatch) -> list:
    """The pages each index read handed to its fetch: what is left of them afterwards."""
    read, handed = IndexCache.read, []

    async def kept_read(self, db, job_id, data_up_to=0):
        found = await read(self, db, job_id, data_up_to)
        handed.append(found.pages)
        return found

    monkeypatch.setattr(IndexCache, "read", kept_read)
    return handed


async def server_with_results(aiohttp_client, make_config, conn, **server):
    client = await aiohttp_client(create_app(make_config(server=server)))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    return client, job_id


async def fetch(client, path: str, encoding: str = "identity", **headers) -> tuple[int, bytes]:
    headers = {"Accept-Encoding": encoding, **headers}
    response = await client.get(path, headers=headers, auto_decompress=False)
    body = await response.read()
    return response.status, gzip.decompress(body) if encoding == "gzip" and body else body


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
@pytest.mark.parametrize("prefix", ["", "/ui"])
async def test_a_whole_small_result_is_read_in_one_query(
    aiohttp_client, make_config, conn, monkeypatch, prefix, encoding
):
    client, job_id = await server_with_results(aiohttp_client, make_config, conn, **COLD)
    reads, handed = Reads(monkeypatch), handed_over(monkeypatch)
    for _ in range(2):  # nothing cached: each fetch reads it all again
        status, body = await fetch(client, f"{prefix}/results?job_id={job_id}", encoding)
        assert (status, orjson.loads(body)) == (200, FULL)
    assert (reads.with_index, reads.page_data) == ([PAGES, PAGES], [])
    assert handed == [{}, {}]  # each page taken out as the body took it: none held after


async def test_fetches_that_send_part_or_nothing_read_no_data_with_the_index(
    aiohttp_client, make_config, conn, monkeypatch
):
    """A filtered fetch reads only its pages, a HEAD none, and a conditional GET (which may be
    answered 304) only those it sends."""
    client, job_id = await server_with_results(aiohttp_client, make_config, conn, **COLD)
    reads = Reads(monkeypatch)
    path = f"/results?job_id={job_id}"
    status, body = await fetch(client, f"{path}&estimator_name=z_profile_&page_numbers=1")
    assert (status, orjson.loads(body)) == (200, {"message": "Results", **_one("z_profile_", 1)})
    assert (await client.head(path)).status == 200
    status, body = await fetch(client, path, **{"If-None-Match": '"other"'})
    assert (status, orjson.loads(body)) == (200, FULL)
    assert (reads.with_index, reads.page_data) == ([0, 0, 0], [1, PAGES])


@pytest.mark.parametrize("over", [0, 1])
async def test_only_a_result_of_a_batch_at_most_is_read_with_its_index(
    aiohttp_client, make_config, conn, monkeypatch, over
):
    """Up to pagecache.BATCH_BYTES stored bytes in all come with the index; one byte more, and
    the pages are read a batch at a time (memory stays flat however large the result)."""
    client, job_id = await server_with_results(aiohttp_client, make_config, conn, **COLD)
    total = await conn.fetchval(
        "SELECT sum(octet_length(p.data)) FROM pages p JOIN estimators e ON e.id = p.estimator_id"
        " JOIN simulations s ON s.id = e.simulation_id WHERE s.job_id = $1",
        job_id,
    )
    monkeypatch.setattr(pagecache, "BATCH_BYTES", total - over)
    reads = Reads(monkeypatch)
    status, body = await fetch(client, f"/results?job_id={job_id}")
    assert (status, orjson.loads(body)) == (200, FULL)
    assert reads.with_index == [0 if over else PAGES]
    assert sum(reads.page_data) == (PAGES if over else 0) and len(reads.page_data) == over * 2


async def test_pages_read_with_the_index_are_cached_like_any_other(
    aiohttp_client, make_config, conn, monkeypatch
):
    client, job_id = await server_with_results(aiohttp_client, make_config, conn, body_cache_size=0)
    reads = Reads(monkeypatch)
    path = f"/results?job_id={job_id}"
    assert (await fetch(client, path))[0] == 200
    status, body = await fetch(client, f"{path}&estimator_name=z_profile_&page_numbers=1")
    assert (status, orjson.loads(body)) == (200, {"message": "Results", **_one("z_profile_", 1)})
    assert (reads.with_index, reads.page_data) == ([PAGES], [])  # the page from the cache


def _one(estimator: str, number: int) -> dict:
    return {"estimators": reference(estimator, {number})}


async def test_pages_read_with_the_index_are_let_go_of_when_the_body_is_cached(
    aiohttp_client, make_config, conn, monkeypatch
):
    """No index kept, the body cached: each fetch reads the index again (with the pages), the
    body comes from the cache, and the pages read are not held while it is sent."""
    client, job_id = await server_with_results(
        aiohttp_client, make_config, conn, index_cache_size=0
    )
    reads, handed = Reads(monkeypatch), handed_over(monkeypatch)
    for _ in range(3):
        status, body = await fetch(client, f"/results?job_id={job_id}")
        assert (status, orjson.loads(body)) == (200, FULL)
    assert (reads.with_index, reads.page_data, handed) == ([PAGES] * 3, [], [{}, {}, {}])
