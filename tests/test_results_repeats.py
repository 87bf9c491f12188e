"""Repeated `GET /results` of finished results (server/results/caches/repeats.py): what a query
came to is answered again only while the full path would answer the same, to the same user."""

import asyncio
import time

import pytest

from server.keys import RESULTS_INDEX
from server.results.caches.indexcache import MAX_VIEW_NUMBERS, IndexCache
from server.results.caches.repeats import Repeats
from server.results.fetch import render
from tests.helpers import answer, eventually, reference, set_key, submit, switch_user, upload
from tests.test_results_indexcache import COMPLETE, RENAME, stored_job

KEY = ("job_id=x", "gzip")  # what a query is remembered by: its raw query string, Accept-Encoding


async def remembered(conn, cache: IndexCache, job_id: str):
    """The gzip variant of the full view of `job_id`, remembered under KEY."""
    entry = await cache.get(conn, job_id)
    view = entry.view(None, None)
    cache.remember(KEY, entry, view, gzip=True)
    return entry, view.gzip


async def finished_and_leased(client, conn, seconds: float = 60) -> tuple[IndexCache, str]:
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + seconds)
    return cache, job_id


async def test_a_repeat_is_answered_only_to_the_owner(client, conn):
    cache, job_id = await finished_and_leased(client, conn)
    entry, variant = await remembered(conn, cache, job_id)
    assert cache.repeat(KEY, entry.user_id) is variant
    assert cache.repeat(KEY, entry.user_id + 1) is None
    assert cache.repeat(("job_id=x", ""), entry.user_id) is None  # another Accept-Encoding


async def test_a_running_simulation_is_never_remembered(client, conn):
    job_id = await stored_job(client, conn)
    cache = IndexCache(10)
    cache.renew(time.monotonic() + 60)
    entry, _ = await remembered(conn, cache, job_id)
    assert not entry.trusted and cache.repeat(KEY, entry.user_id) is None


async def test_repeats_are_forgotten_when_their_entry_leaves(client, conn):
    """A change notification, a lost listener, an eviction: each drops what was remembered,
    and a notification about another simulation drops nothing."""
    cache, job_id = await finished_and_leased(client, conn)
    entry, variant = await remembered(conn, cache, job_id)
    cache.changed("another job")
    assert cache.repeat(KEY, entry.user_id) is variant
    cache.changed(job_id)
    assert cache.repeat(KEY, entry.user_id) is None

    cache.renew(time.monotonic() + 60)
    entry, variant = await remembered(conn, cache, job_id)
    cache.distrust()
    assert cache.repeat(KEY, entry.user_id) is None

    cache = IndexCache(1)  # room for one entry
    cache.renew(time.monotonic() + 60)
    entry, variant = await remembered(conn, cache, job_id)
    other = await submit(client)
    await set_key(conn, other)
    assert (await upload(client, other)).status == 202
    await conn.execute(COMPLETE, other)
    assert await cache.get(conn, other) is not None  # evicts the first
    assert cache.repeat(KEY, entry.user_id) is None


async def test_forgetting_a_simulation_keeps_the_repeats_of_the_others(client, conn):
    cache, first = await finished_and_leased(client, conn)
    second = await submit(client)
    await set_key(conn, second)
    assert (await upload(client, second)).status == 202
    await conn.execute(COMPLETE, second)
    entry, _ = await remembered(conn, cache, first)
    other = await cache.get(conn, second)
    other_key = ("job_id=y", "gzip")
    cache.remember(other_key, other, other.view(None, None), gzip=True)
    cache.changed(first)
    assert cache.repeat(KEY, entry.user_id) is None
    assert cache.repeat(other_key, other.user_id) is other.view(None, None).gzip
    assert set(cache.repeats.jobs) == {second}


async def test_the_query_asked_least_recently_is_forgotten_first(client, conn, monkeypatch):
    monkeypatch.setattr(Repeats, "MAX_ENTRIES", 2)
    cache, job_id = await finished_and_leased(client, conn)
    entry = await cache.get(conn, job_id)
    view = entry.view(None, None)
    keys = [(f"job_id={job_id}&n={number}", "gzip") for number in range(3)]
    for key in keys[:2]:
        cache.remember(key, entry, view, gzip=True)
    assert cache.repeat(keys[0], entry.user_id) is view.gzip  # keys[1] is now the least recent
    cache.remember(keys[2], entry, view, gzip=True)
    assert [cache.repeat(key, entry.user_id) for key in keys] == [view.gzip, None, view.gzip]
    cache.changed(job_id)
    assert [cache.repeat(key, entry.user_id) for key in keys] == [None] * 3
    assert set(cache.repeats.jobs) == set()


async def test_an_entry_dropped_while_its_answer_was_made_is_not_remembered(client, conn):
    cache, job_id = await finished_and_leased(client, conn)
    entry = await cache.get(conn, job_id)
    cache.changed(job_id)  # while the body was being made
    cache.remember(KEY, entry, entry.view(None, None), gzip=True)
    assert cache.repeat(KEY, entry.user_id) is None


async def test_a_view_its_entry_does_not_keep_is_not_remembered(client, conn):
    """Views of more than MAX_VIEW_NUMBERS pages are made for each request and not kept: what
    they hold (a key per page) would weigh on memory with no bound but the count of repeats."""
    cache, job_id = await finished_and_leased(client, conn)
    entry = await cache.get(conn, job_id)
    numbers = list(range(MAX_VIEW_NUMBERS + 1))
    cache.remember(KEY, entry, entry.view(None, numbers), gzip=True)
    assert cache.repeat(KEY, entry.user_id) is None and cache.repeats.jobs == set()
    cache.remember(KEY, entry, entry.view(None, numbers[:-1]), gzip=True)
    assert cache.repeat(KEY, entry.user_id) is entry.view(None, numbers[:-1]).gzip


async def test_a_repeat_needs_the_lease(client, conn):
    cache, job_id = await finished_and_leased(client, conn, seconds=0.3)
    entry, variant = await remembered(conn, cache, job_id)
    assert cache.repeat(KEY, entry.user_id) is variant
    await asyncio.sleep(0.4)
    assert cache.repeat(KEY, entry.user_id) is None


async def test_a_repeat_needs_its_entry_still_trusted(client, conn):
    """With the lease lapsed, a full fetch checks the entry's row; if more notifications came
    meanwhile than are remembered one by one (FORGET_AFTER), the entry stays but is no longer
    trusted, and its repeats are not answered until a full fetch trusts it again."""
    cache, job_id = await finished_and_leased(client, conn, seconds=0.2)
    entry, variant = await remembered(conn, cache, job_id)
    await asyncio.sleep(0.3)
    checking = asyncio.create_task(cache.get(conn, job_id))
    await asyncio.sleep(0)  # the check of its row is under way
    for number in range(IndexCache.FORGET_AFTER + 1):  # the last one forgets the others
        cache.changed(f"another job {number}")
    assert await checking is entry and not entry.trusted
    cache.renew(time.monotonic() + 60)
    assert cache.repeat(KEY, entry.user_id) is None
    assert await cache.get(conn, job_id) is entry and entry.trusted
    assert cache.repeat(KEY, entry.user_id) is variant


# Through the server: the answers a user sees.


async def finished_job(client, conn) -> str:
    job_id = await stored_job(client, conn)
    await conn.execute(COMPLETE, job_id)
    return job_id


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_repeated_fetch_is_the_first_answer_again(client, conn, encoding):
    job_id = await finished_job(client, conn)

    async def answered_from_memory() -> bool:
        # (until the notification of the job's completion has been heard, it may be read again)
        first = await answer(client, job_id, encoding)
        await conn.execute(RENAME, job_id)  # behind the server's back: no notification
        return [await answer(client, job_id, encoding) for _ in range(3)] == [first] * 3

    await eventually(answered_from_memory)
    cache = client.app[RESULTS_INDEX]
    assert cache.repeats.jobs == {job_id}  # remembered by the first, answered from memory after


async def test_a_query_whose_body_is_not_cached_is_not_remembered(client, conn, monkeypatch):
    """A body streamed (past SINGLE_WRITE) is never in the body cache: a repeat of its query
    would only miss it, so the query is worked out in full each time, with the same answer."""
    job_id = await finished_job(client, conn)
    cache = client.app[RESULTS_INDEX]
    identity, gzip = (f"job_id={job_id}", "identity"), (f"job_id={job_id}", "gzip")

    async def remembered_identity() -> bool:
        assert (await answer(client, job_id, "identity"))[0] == 200
        return cache.repeats.get(identity) is not None

    await eventually(remembered_identity)
    monkeypatch.setattr(render, "SINGLE_WRITE", 0)
    answers = [await answer(client, job_id, "gzip") for _ in range(2)]
    assert answers[0][0] == 200 and answers[1] == answers[0]
    assert cache.repeats.get(gzip) is None and cache.repeats.get(identity) is not None


async def test_repeated_queries_keep_every_rule_of_the_full_path(client, conn):
    job_id = await finished_job(client, conn)
    url = f"/results?job_id={job_id}"
    gzip, plain = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}
    for _ in range(2):
        response = await client.get(url, headers=gzip, auto_decompress=False)
        assert (response.status, response.headers["Content-Encoding"]) == (200, "gzip")
    response = await client.get(url, headers=plain)
    assert (response.status, await response.json()) == (
        200,
        {"message": "Results", "estimators": reference()},
    )
    assert "Content-Encoding" not in response.headers
    etag = response.headers["ETag"]
    response = await client.get(url, headers={**plain, "If-None-Match": etag})
    assert (response.status, await response.read()) == (304, b"")
    response = await client.head(url, headers=gzip)
    assert (response.status, await response.read()) == (200, b"")
    response = await client.get(url + "&estimator_name=nope", headers=gzip)
    assert (response.status, await response.json()) == (
        404,
        {"message": "Estimator not found: nope"},
    )

    await switch_user(client, "bob")
    response = await client.get(url, headers=gzip)
    assert (response.status, await response.json()) == (
        403,
        {"message": "Simulation belongs to another user"},
    )

    await switch_user(client, "alice")
    deleted = await client.delete("/user/simulations", params={"job_id": job_id})
    assert deleted.status == 200
    response = await client.get(url, headers=gzip)
    assert (response.status, await response.json()) == (404, {"message": "Simulation not found"})


async def test_a_repeat_keeps_its_entry_recently_used(client, conn):
    """Answered from repeats alone, a simulation is still the index cache's most recently used:
    the next one read evicts another."""
    cache, first = await finished_and_leased(client, conn)
    cache.max_entries = 2
    entry, variant = await remembered(conn, cache, first)
    others = []
    for _ in range(2):
        others.append(await submit(client))
        await set_key(conn, others[-1])
        assert (await upload(client, others[-1])).status == 202
        await conn.execute(COMPLETE, others[-1])
    assert await cache.get(conn, others[0]) is not None
    assert cache.repeat(KEY, entry.user_id) is variant
    assert await cache.get(conn, others[1]) is not None  # evicts others[0], not the first
    assert cache.repeat(KEY, entry.user_id) is variant
