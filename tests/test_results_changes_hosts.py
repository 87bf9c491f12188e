"""The results caches and their invalidation across server processes and hosts, attacked with
real server processes (run.py) on one real PostgreSQL, over real HTTP: listeners cut, a process
stopped or down during a delete, many deletes at once, the database restarted, the shared
body-file directory's budget."""

import asyncio
import contextlib
import io
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest

from tests.helpers import KEY, RESULTS, eventually, migrated
from tests.servers import free_port, start, wait_ready
from tests.test_database_outage import own_database, pg_ctl, start_again
from tests.test_head import large_pages
from tests.test_results_changes import (
    NOT_FOUND,
    Client,
    alice_on,
    finish,
    running_job,
    upload,
)

DELETED = (200, {"message": "Simulation deleted"})
LISTENERS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'yaptide-changes'"
OTHER_ROLE = "yaptide_test_host_b"  # the role of a server process "on another host"


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def ensure_role(conn: asyncpg.Connection) -> None:
    """A second login role (superuser: it may do all the first one does), so that the
    listening session of one server process can be told from another's in pg_stat_activity."""
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OTHER_ROLE)
    if not exists:
        await conn.execute(f"CREATE ROLE {OTHER_ROLE} LOGIN SUPERUSER")


@pytest.fixture
async def servers(database_url: str, conn: asyncpg.Connection, tmp_path: Path):
    """servers(count, urls=None, env=None) -> a logged-in Client of `count` run.py processes on
    one database, each with a data directory of its own (tmp_path/data<i>), and their Popens."""
    started: list[Any] = []

    @contextlib.asynccontextmanager
    async def make(
        count: int,
        urls: list[str] | None = None,
        shared: bool = False,
        db: asyncpg.Connection | None = None,
        **env: str,
    ) -> AsyncIterator[tuple[Client, list[Any]]]:
        ports = [free_port() for _ in range(count)]
        urls = urls or [database_url] * count
        processes = [
            start(url, tmp_path / ("data0" if shared else f"data{i}"), port, **env)
            for i, (url, port) in enumerate(zip(urls, ports, strict=True))
        ]
        started.extend(processes)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            client = await alice_on(http, bases, processes, login_at=0)

            async def all_listening() -> bool:
                return len(await (db or conn).fetch(LISTENERS)) == count

            await eventually(all_listening)
            yield client, started

    try:
        yield make
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except Exception:
                process.kill()


async def large_finished(
    user: Client, conn: asyncpg.Connection, seed: int = 15, count: int = 4, process: int = 0
) -> str:
    """A finished simulation (through `process`) whose gzip body is streamed (~0.9 MB a
    page)."""
    job_id = await running_job(user, conn)
    estimators = [{"name": "z", "pages": large_pages(count, seed=seed)}]
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "estimators": estimators})
    json = {"Content-Type": "application/json"}
    status, _ = await user.call(process, "POST", "/results", data=io.BytesIO(body), headers=json)
    assert status == 202
    await finish(user, process, job_id)
    return job_id


def body_files(tmp_path: Path, process: int, job_id: str) -> list[str]:
    directory = tmp_path / f"data{process}" / "body-files"
    return sorted(p.name for p in directory.glob(f"{job_id}.*")) if directory.exists() else []


@contextlib.asynccontextmanager
async def listener_kept_down(conn: asyncpg.Connection, role: str) -> AsyncIterator[None]:
    """The listening connection of the server process connected as `role` is terminated as
    soon as it appears (a network blip on that host), until the block ends."""

    async def kill() -> None:
        sql = f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS} AND usename = $1) AS l"
        while True:
            await conn.execute(sql, role)
            await asyncio.sleep(0.01)

    killer = asyncio.ensure_future(kill())
    try:
        await asyncio.sleep(0.3)
        yield
    finally:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer


async def test_a_delete_while_a_listener_is_down_leaves_no_body_file_behind(
    servers, conn, database_url, tmp_path
):
    """Two processes on one database with data directories of their own (two hosts), each with
    the body file of a finished simulation. While process 1's listening connection is down (a
    blip), process 0 deletes the simulation: DELETE answers 200, and process 1, which missed
    the notification, never removes its file: the deleted results stay on its disk after the
    DELETE returned (and after it reconnected), until eviction pushes them out."""
    await ensure_role(conn)
    urls = [database_url, as_role(database_url, OTHER_ROLE)]
    async with servers(2, urls) as (user, _):
        job_id = await large_finished(user, conn)
        status, body = await user.results(1, job_id)  # process 1 writes its own file
        assert (status, len(body["estimators"][0]["pages"])) == (200, 4)

        async def both_written() -> bool:
            return all(len(body_files(tmp_path, p, job_id)) == 1 for p in (0, 1))

        await eventually(both_written)
        async with listener_kept_down(conn, OTHER_ROLE):
            deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
            assert deleted == DELETED
            assert await user.results(1, job_id) == (404, NOT_FOUND)

        async def both_listening() -> bool:
            return len(await conn.fetch(LISTENERS)) == 2

        await eventually(both_listening)
        await asyncio.sleep(1)
        assert [body_files(tmp_path, p, job_id) for p in (0, 1)] == [[], []]


async def from_memory(user: Client, conn: asyncpg.Connection, process: int, job_id: str) -> None:
    """Wait until `process` answers `job_id` from memory (a rename behind the server's back,
    which no trigger announces, does not show in its answers)."""

    async def unchanged_after_rename() -> bool:
        _, before = await user.results(process, job_id)
        await conn.execute(
            "UPDATE estimators SET name = name || '+' WHERE simulation_id ="
            " (SELECT id FROM simulations WHERE job_id = $1)",
            job_id,
        )
        _, after = await user.results(process, job_id)
        return [e["name"] for e in after["estimators"]] == [e["name"] for e in before["estimators"]]

    await eventually(unchanged_after_rename)


async def small_finished(user: Client, conn: asyncpg.Connection) -> str:
    job_id = await running_job(user, conn)
    await upload(user, 0, job_id, RESULTS["estimators"][:1])
    await finish(user, 0, job_id)
    return job_id


@pytest.mark.parametrize("stopped_for", [0.3, 2.0])
async def test_a_stopped_process_neither_holds_a_delete_nor_serves_it_when_resumed(
    servers, conn, stopped_for
):
    """Three processes; the third serves a finished simulation from memory, then is stopped
    (SIGSTOP) so it can acknowledge nothing. A DELETE through the first returns within about
    the lease, and a fetch sent to the third while it is stopped, answered once it resumes,
    is 404."""
    async with servers(3) as (user, processes):
        job_id = await small_finished(user, conn)
        await from_memory(user, conn, 2, job_id)
        processes[2].send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
            took = time.monotonic() - began
            assert deleted == DELETED
            assert took < 2.5
            fetch = asyncio.ensure_future(user.results(2, job_id))
            await asyncio.sleep(stopped_for)
        finally:
            processes[2].send_signal(signal.SIGCONT)
        assert await fetch == (404, NOT_FOUND)
        assert await user.results(1, job_id) == (404, NOT_FOUND)


async def test_many_deletes_at_once_are_all_seen_everywhere(servers, conn):
    """Forty finished simulations served from memory by process 1, deleted at once through
    process 0 (concurrent DELETEs, many acknowledgements): each DELETE answers 200 within a
    bounded time and process 1 answers 404 for every one right after."""
    async with servers(2) as (user, _):
        jobs = [await small_finished(user, conn) for _ in range(40)]
        for job_id in jobs:
            assert (await user.results(1, job_id))[0] == 200
        await from_memory(user, conn, 1, jobs[-1])
        began = time.monotonic()

        async def delete_then_fetch(job_id: str) -> tuple[Any, Any]:
            deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
            return deleted, await user.results(1, job_id)

        answers = await asyncio.gather(*(delete_then_fetch(job_id) for job_id in jobs))
        assert answers == [(DELETED, (404, NOT_FOUND))] * len(jobs)
        assert time.monotonic() - began < 10


async def test_the_shared_body_file_directory_stays_within_its_budget(servers, conn, tmp_path):
    """Two processes sharing one data directory (as with --workers 2), a disk budget of 12 MB
    and eight finished simulations of ~2.7 MB gzip bodies, finished through either process and
    fetched from both: the directory never holds more than the budget once writes are over."""
    budget = 12_000_000
    async with servers(2, shared=True, YAPTIDE_SERVER_DISK_CACHE_SIZE=str(budget)) as (user, _):
        directory = tmp_path / "data0" / "body-files"
        jobs = []
        for seed in range(8):
            jobs.append(await large_finished(user, conn, seed=seed, count=3, process=seed % 2))
            for process in (0, 1):
                assert (await user.results(process, jobs[-1]))[0] == 200
        await asyncio.sleep(2)
        files = sorted(directory.iterdir())
        assert files, "no body file was written"
        assert sum(f.stat().st_size for f in files) <= budget


async def test_a_server_down_during_a_delete_removes_its_body_file_when_back(
    servers, conn, database_url, tmp_path
):
    """Two hosts (data directories of their own), each with the body file of a finished
    simulation; the second is stopped (an upgrade, a reboot) while the first deletes the
    simulation. Started again on its data directory, it still keeps the deleted results on
    disk: nothing ever removes them but eviction."""
    async with servers(2) as (user, processes):
        job_id = await large_finished(user, conn)
        assert (await user.results(1, job_id))[0] == 200

        async def both_written() -> bool:
            return all(len(body_files(tmp_path, p, job_id)) == 1 for p in (0, 1))

        await eventually(both_written)
        processes[1].send_signal(signal.SIGTERM)
        assert processes[1].wait(timeout=60) == 0
        deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
        assert deleted == DELETED
        port = int(user.bases[1].rpartition(":")[2])
        again = start(database_url, tmp_path / "data1", port)
        processes.append(again)  # (the fixture's list: stopped at the end)
        await wait_ready(user.http, user.bases[1], again)
        assert await user.results(1, job_id) == (404, NOT_FOUND)
        await asyncio.sleep(1)
        assert [body_files(tmp_path, p, job_id) for p in (0, 1)] == [[], []]


async def test_etag_revalidation_and_head_after_a_delete_are_404(servers, conn):
    """A browser holding a finished simulation's ETag (identity and gzip) revalidates with
    If-None-Match at the process that serves it from memory after another process deleted it:
    404, never 304; HEAD too."""
    async with servers(2) as (user, _):
        job_id = await small_finished(user, conn)
        await from_memory(user, conn, 1, job_id)
        params = {"job_id": job_id}
        tags = {}
        for encoding in ("identity", "gzip"):
            url = user.bases[1] + "/results"
            headers = {"Cookie": user.cookie, "Accept-Encoding": encoding}
            async with user.http.get(url, params=params, headers=headers) as response:
                assert response.status == 200
                tags[encoding] = response.headers["ETag"]
            headers["If-None-Match"] = tags[encoding]
            async with user.http.get(url, params=params, headers=headers) as response:
                assert response.status == 304
        assert await user.call(0, "DELETE", "/user/simulations", params=params) == DELETED
        for encoding, tag in tags.items():
            headers = {"Cookie": user.cookie, "Accept-Encoding": encoding, "If-None-Match": tag}
            for method in ("GET", "HEAD"):
                url = user.bases[1] + "/results"
                async with user.http.request(method, url, params=params, headers=headers) as r:
                    assert (method, encoding, r.status) == (method, encoding, 404)


__all__ = ["own_database"]  # a fixture of tests/test_database_outage.py, used here


async def test_a_database_restart_under_running_servers(servers, own_database):
    """PostgreSQL restarted (fast shutdown, start) while two processes run and one serves a
    finished simulation from memory: both listen again by themselves, and a delete through
    one is then seen at once by the other."""
    url, pgdata = own_database
    await migrated(url)
    db = await asyncpg.connect(url)
    try:
        async with servers(2, urls=[url, url], db=db) as (user, _):
            job_id = await small_finished(user, db)
            other = await small_finished(user, db)
            await from_memory(user, db, 1, job_id)
            await db.close()
            await asyncio.to_thread(pg_ctl, pgdata, "stop", "-m", "fast")
            await asyncio.to_thread(start_again, url, pgdata)
            db = await asyncpg.connect(url)

            async def both_listening() -> bool:
                return len(await db.fetch(LISTENERS)) == 2

            await eventually(both_listening)
            await from_memory(user, db, 1, job_id)
            params = {"job_id": job_id}
            assert await user.call(0, "DELETE", "/user/simulations", params=params) == DELETED
            assert await user.results(1, job_id) == (404, NOT_FOUND)
            assert (await user.results(1, other))[0] == 200
    finally:
        await db.close()
