"""The per-process results index cache (server/results/caches/indexcache.py) and the shared heads
query (server/results/caches/heads.py) against the real database: when an entry is trusted without a
query, when it is not, and which query may answer a fetch."""

import asyncio
import gc
import io
import time
import tracemalloc

import asyncpg
import orjson

from server.app import create_app
from server.results.caches.heads import HeadReader
from server.results.caches.indexcache import FIELD_BYTES_PER_PAGE, MAX_VIEWS, IndexCache, select
from server.results.caches.lru import HashedKey, LruCache
from server.store import results
from tests.helpers import KEY, login, reference, set_key, submit, upload

RENAME = (
    "UPDATE estimators SET name = name || '+'"
    " WHERE simulation_id = (SELECT id FROM simulations WHERE job_id = $1)"
)
COMPLETE = "UPDATE simulations SET job_state = 'COMPLETED', end_time = now() WHERE job_id = $1"


async def stored_job(client, conn) -> str:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202
    return job_id


def names(cache_entry) -> list[str]:
    return sorted(cache_entry.index.estimators)


async def test_only_finished_entries_are_trusted_while_leased(client, conn):
    job_id = await stored_job(client, conn)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + 60)
    running = await cache.get(conn, job_id)
    assert running is not None and not running.trusted
    await conn.execute(COMPLETE, job_id)
    finished = await cache.get(conn, job_id)  # the row changed: read again
    assert finished is not None and finished.trusted and finished is not running
    before = names(finished)
    await conn.execute(RENAME, job_id)  # behind the server's back: no notification
    assert names(await cache.get(conn, job_id)) == before  # from memory, no query
    cache.changed(job_id)  # what the listener does on a notification
    assert names(await cache.get(conn, job_id)) == [name + "+" for name in before]


async def test_without_a_lease_every_entry_is_checked(client, conn):
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + 60)
    assert (await cache.get(conn, job_id)).trusted
    cache.renew(time.monotonic() - 1)  # an older lease changes nothing
    assert await cache.get(conn, job_id) is not None
    cache.distrust()  # the listener failed: the lease is gone
    await conn.execute("DELETE FROM simulations WHERE job_id = $1", job_id)
    assert await cache.get(conn, job_id) is None


class NotifiedDuringReads:
    """The test database, with a change notification arriving while each read is under way."""

    def __init__(self, conn: asyncpg.Connection, cache: IndexCache, job_id: str) -> None:
        self.conn, self.cache, self.job_id = conn, cache, job_id

    async def fetch(self, *args):
        rows = await self.conn.fetch(*args)
        self.cache.changed(self.job_id)
        return rows

    async def fetchrow(self, *args):
        row = await self.conn.fetchrow(*args)
        self.cache.changed(self.job_id)
        return row


async def test_an_entry_read_while_a_change_arrived_is_not_trusted(client, conn):
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + 60)
    entry = await cache.get(NotifiedDuringReads(conn, cache, job_id), job_id)
    assert entry is not None and not entry.trusted  # the notification may be about this read
    assert (await cache.get(conn, job_id)).trusted  # a quiet read is


async def test_no_entries_kept_when_off(client, conn):
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    cache = IndexCache(0)
    cache.renew(time.monotonic() + 60)
    first = await cache.get(conn, job_id)
    assert first is not None and first is not await cache.get(conn, job_id)


async def test_select(client, conn):
    job_id = await stored_job(client, conn)
    index = (await results.read_index(conn, job_id)).index
    every = select(index, (None, None, "by_estimator"))
    assert [page.estimator for page in every.pages] == [
        e["name"] for e in reference() for _ in e["pages"]
    ]
    assert every.estimator_found and every.identity.etag is None  # running: no ETag
    assert every.gzip.headers == {
        "Content-Type": "application/json",
        "Vary": "Accept-Encoding",
        "Cache-Control": "private, no-cache",
        "Content-Encoding": "gzip",
    }
    some = select(index, ("peak_", (1, 3, 99), "by_estimator"))
    assert [(page.estimator, page.page_number) for page in some.pages] == [
        ("peak_", 1),
        ("peak_", 3),
    ]
    missing = select(index, ("nope", None, "by_estimator"))
    assert not missing.estimator_found and missing.pages == ()
    await conn.execute(COMPLETE, job_id)
    done = select((await results.read_index(conn, job_id)).index, (None, None, "by_estimator"))
    assert done.identity.etag and done.gzip.etag and done.identity.etag != done.gzip.etag
    assert done.gzip.headers["ETag"] == done.gzip.etag


class SlowAnswers:
    """The test database, answering each query only when the test lets it (after running it)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.asked, self.gate = conn, [], asyncio.Event()

    async def fetch(self, sql, job_ids):
        self.asked.append(sorted(job_ids))
        rows = await self.conn.fetch(sql, job_ids)
        await self.gate.wait()
        self.gate.clear()
        return rows


async def test_fetches_share_a_heads_query_sent_after_they_asked(client, conn):
    job_id = await stored_job(client, conn)
    other = await submit(client)
    db, reader = SlowAnswers(conn), HeadReader()
    first = asyncio.create_task(reader.get(db, job_id))
    while not db.asked:  # the first query is under way (already run, not yet answered)
        await asyncio.sleep(0.01)
    await conn.execute(COMPLETE, job_id)  # a change committed after that query ran
    later = [asyncio.create_task(reader.get(db, job)) for job in (job_id, job_id, other)]
    await asyncio.sleep(0)  # they ask
    assert db.asked == [[job_id]]  # nobody else asks while a query is under way
    db.gate.set()
    assert (await first).job_state == "PENDING"  # ran before the change
    while len(db.asked) < 2:
        await asyncio.sleep(0.01)
    db.gate.set()
    heads = [await task for task in later]
    assert [head.job_state for head in heads] == ["COMPLETED", "COMPLETED", "PENDING"]
    assert db.asked == [[job_id], sorted([job_id, other])]  # the three shared one query
    assert await reader.get(conn, "no-such-job") is None


async def test_estimator_fields_are_read_once_per_estimator(client, conn):
    """An estimator's fields (`metadata`...) are one value however many pages it has: reading
    the index must not hold (nor make PostgreSQL send) a copy of them per page."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    metadata = {"note": "x" * (64 << 10)}
    pages = [{"page_number": number} for number in range(2000)]
    estimators = [{"name": "z", "metadata": metadata, "pages": pages}]
    assert (await upload(client, job_id, estimators)).status == 202  # 0.1 MB stored
    await conn.execute(COMPLETE, job_id)
    tracemalloc.start()
    try:
        response = await client.get(
            "/results",
            params={"job_id": job_id, "page_number": "7"},
            headers={"Accept-Encoding": "identity"},
        )
        body = await response.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    page = {"page_number": 7}
    assert body == {
        "message": "Results",
        "estimators": [{"name": "z", "metadata": metadata, "pages": [page]}],
    }
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MB to serve one page of 0.1 MB of results"


async def test_remembered_views_hold_no_more_pages_than_their_index(client, conn):
    """A view is remembered only when its filter names few page numbers, but with no estimator
    named such a filter keeps that page of every estimator: 16 views of a 50,000-page index
    (2,000 estimators) held 104 MiB beside the index's 11 MiB, for as long as the entry lived,
    and the cache counts entries (server.index_cache_size), not what they hold."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimators = [
        {"name": f"e{n}", "pages": [{"page_number": p} for p in range(10)]} for n in range(200)
    ]
    assert (await upload(client, job_id, estimators)).status == 202  # 2,000 pages
    cache = IndexCache(10)
    tracemalloc.start()
    try:
        entry = await cache.get(conn, job_id)
        index_size, _ = tracemalloc.get_traced_memory()
        for n in range(MAX_VIEWS):  # each names at most 64 numbers, and keeps every page
            entry.view(None, list(range(10 + n)))
        with_views, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    views = with_views - index_size
    assert views <= 2 * index_size, f"views {views >> 10} KiB, index {index_size >> 10} KiB"


async def test_the_cache_holds_no_more_page_references_than_configured(
    aiohttp_client, make_config, conn
):
    """The cache counted entries only (10,000 by default), but one index may list 50,000 pages
    (~15 MiB with its views): a user fetching their many-page results one after another grew
    the process without end. It now also counts the page references its entries hold."""
    server = {"index_cache_pages": 10_000, "page_cache_size": 0, "body_cache_size": 0}
    client = await aiohttp_client(create_app(make_config(server=server)))
    await login(client)
    estimators = [
        {"name": f"e{n}", "pages": [{"page_number": p} for p in range(10)]} for n in range(200)
    ]
    jobs = []
    for _ in range(10):  # 2,000 pages each: at most 4 fit in 10,000
        jobs.append(await submit(client))
        await set_key(conn, jobs[-1])
        assert (await upload(client, jobs[-1], estimators)).status == 202
    tracemalloc.start()
    try:
        held = [await held_after_fetching(client, job_id) for job_id in jobs]
    finally:
        tracemalloc.stop()
    one = held[1] - held[0]  # what one more entry holds (a second still fits)
    growth = held[-1] - held[0]  # 9 more entries fetched: at most 3 more kept
    assert growth < 5 * one, f"{growth >> 10} KiB more after 9 more fetches, {one >> 10} per entry"


async def held_after_fetching(client, job_id: str) -> int:
    """The memory the process holds (traced) after a full GET /results of `job_id`."""
    response = await client.get("/results", params={"job_id": job_id})
    assert response.status == 200 and len((await response.json())["estimators"]) == 200
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_an_index_of_a_quarter_of_the_pages_is_kept(client, conn):
    """README (server.index_cache_pages): "an index of more than a quarter of it is not kept".
    An index of exactly a quarter (50,000 pages at the default) was not kept either: each fetch
    of a finished simulation read it whole again."""
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    index = (await results.read_index(conn, job_id)).index
    pages = len(index.pages) + index.fields_size // FIELD_BYTES_PER_PAGE  # what it counts for
    cache = IndexCache(10, max_pages=4 * pages)
    cache.renew(time.monotonic() + 60)
    first = await cache.get(conn, job_id)
    assert first is not None and first.trusted
    assert await cache.get(conn, job_id) is first, (
        f"an index of {pages} pages, a quarter of {4 * pages}: not kept"
    )


async def test_a_lease_that_ran_out_serves_nothing_from_memory(client, conn):
    """The lease bounds how long a process trusts what it holds without hearing from its
    listener (a connection cut without a close is found only when a ping times out, and the
    event loop may be held meanwhile): once it has run out, every entry is checked again."""
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + 0.3)
    assert (await cache.get(conn, job_id)).trusted
    await conn.execute("DELETE FROM simulations WHERE job_id = $1", job_id)  # no notification
    assert await cache.get(conn, job_id) is not None  # leased: served from memory
    await asyncio.sleep(0.4)
    assert await cache.get(conn, job_id) is None


async def test_estimator_fields_count_against_the_page_references(
    aiohttp_client, make_config, conn
):
    """README (server.index_cache_pages): the indexes kept hold about 300 bytes a page
    reference together. An estimator's own fields (`metadata`, of any size a worker sends) are
    kept with its index: uncounted, six one-page indexes held 12 MiB in a cache of 1,000
    references (~0.3 MB), and at the defaults 10,000 entries could hold any amount."""
    server = {"index_cache_pages": 1000, "page_cache_size": 0, "body_cache_size": 0}
    server |= {"disk_cache_size": 0}  # (a body file being written holds its buffer)
    client = await aiohttp_client(create_app(make_config(server=server)))
    await login(client)
    jobs = []
    for number in range(6):
        jobs.append(await submit(client))
        await set_key(conn, jobs[-1])
        metadata = {"note": str(number) * (2 << 20)}
        estimators = [{"name": "z", "metadata": metadata, "pages": [{"page_number": 0}]}]
        body = {"simulation_id": jobs[-1], "update_key": KEY, "estimators": estimators}
        response = await client.post("/results", data=io.BytesIO(orjson.dumps(body)))
        assert response.status == 202
        await conn.execute(COMPLETE, jobs[-1])
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for job_id in jobs:
            response = await client.get("/results", params={"job_id": job_id, "page_number": "0"})
            length = 0
            while piece := await response.content.read(1 << 16):  # the server's memory only
                length += len(piece)
            assert response.status == 200 and length > 2 << 20
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # (the last body sent may still be referenced: 2 MiB)
    assert held < 4 << 20, f"{held / 2**20:.1f} MiB held by a cache of 1,000 page references"


def test_a_body_key_is_its_tuple_with_the_hash_kept():
    """A view's body key (its pages' versions) is hashed once, when the view is made, and is
    otherwise the tuple it was: equal, hashed and written alike, so the body cache finds it by
    either and the body files keep their names (a digest of its repr)."""
    plain = (True, ("by_estimator", 3, (("mesh", (1, 2)), ("mesh", (2, 7)))))
    key = HashedKey(plain)
    assert (key, hash(key), repr(key)) == (plain, hash(plain), repr(plain))
    bodies = LruCache[bytes](100)
    bodies.put(key, b"body", 4)
    assert (bodies.get(plain), bodies.get(HashedKey(plain))) == (b"body", b"body")
