"""Finished results are served from memory, and a change made in one server process is seen at
once in another: two real `python run.py` processes on one database, a user's requests going to
either of them (as with `--workers 2` behind one port, where the kernel picks the process)."""

import asyncio
import contextlib
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from tests.helpers import KEY, RESULTS, SHIELDHIT_FILES, eventually, payload, reference, set_key
from tests.servers import free_port, start, wait_ready
from tests.test_head import large_pages

NOT_FOUND = {"message": "Simulation not found"}


class Client:
    """A logged-in user who may send each request to either process."""

    def __init__(self, http: aiohttp.ClientSession, bases: list[str]) -> None:
        self.http, self.bases, self.cookie = http, bases, ""

    async def call(self, process: int, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Cookie": self.cookie, **kwargs.pop("headers", {})}
        url = self.bases[process] + path
        async with self.http.request(method, url, headers=headers, **kwargs) as response:
            return response.status, orjson.loads(await response.read())

    async def results(self, process: int, job_id: str, **params: str) -> tuple[int, Any]:
        return await self.call(process, "GET", "/results", params={"job_id": job_id, **params})


async def alice_on(
    http: aiohttp.ClientSession, bases: list[str], processes: list[Any], login_at: int
) -> Client:
    """The servers at `bases` once they answer, with alice registered through the first and
    signed in through `bases[login_at]`."""
    for base, process in zip(bases, processes, strict=True):
        await wait_ready(http, base, process)
    client = Client(http, bases)
    account = {"username": "alice", "password": "password1"}
    assert (await client.call(0, "PUT", "/auth/register", json=account))[0] == 201
    async with http.post(bases[login_at] + "/auth/login", json=account) as response:
        assert response.status == 202
        client.cookie = f"access_token={response.cookies['access_token'].value}"
    return client


@pytest.fixture
async def user(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[Client]:
    ports = [free_port(), free_port()]
    processes = [start(database_url, tmp_path / f"data{i}", port) for i, port in enumerate(ports)]
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            yield await alice_on(http, bases, processes, login_at=1)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=60) == 0


async def running_job(user: Client, conn: asyncpg.Connection) -> str:
    status, body = await user.call(0, "POST", "/jobs/direct", json=payload(SHIELDHIT_FILES))
    assert status == 202, body
    await set_key(conn, body["job_id"])
    return str(body["job_id"])


async def upload(user: Client, process: int, job_id: str, estimators: list[Any]) -> None:
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": estimators}
    assert await user.call(process, "POST", "/results", json=body) == (
        202,
        {"message": "Results saved"},
    )


async def finish(user: Client, process: int, job_id: str) -> None:
    """Every task RUNNING then COMPLETED (results are stored: the job becomes COMPLETED)."""
    for task_id in range(1, 5):
        for state in ("RUNNING", "COMPLETED"):
            body = {"simulation_id": job_id, "update_key": KEY, "task_id": task_id}
            body["update_dict"] = {"task_state": state}
            assert (await user.call(process, "POST", "/tasks", json=body))[0] == 202


def names(body: dict[str, Any]) -> list[str]:
    return [estimator["name"] for estimator in body["estimators"]]


async def served_from_memory(user: Client, conn: asyncpg.Connection, job_id: str) -> None:
    """Wait until process 1 answers from memory: a rename made behind the server's back (no
    trigger announces it) does not show in its answers."""

    async def unchanged_after_rename() -> bool:
        _, before = await user.results(1, job_id)
        await conn.execute(
            "UPDATE estimators SET name = name || '+' WHERE simulation_id ="
            " (SELECT id FROM simulations WHERE job_id = $1)",
            job_id,
        )
        _, after = await user.results(1, job_id)
        return names(after) == names(before)

    await eventually(unchanged_after_rename)


async def test_changes_in_one_process_are_seen_at_once_in_the_other(user, conn):
    job_id = await running_job(user, conn)
    await upload(user, 0, job_id, RESULTS["estimators"])
    assert await user.results(1, job_id) == (200, {"message": "Results", "estimators": reference()})

    # A re-upload through process 0 is what process 1 answers right after it.
    new = {"page_number": 0, "name": "NEW", "data": {"values": [7]}}
    await upload(user, 0, job_id, [{"name": "peak_", "pages": [new]}])
    status, body = await user.results(1, job_id, estimator_name="peak_", page_number="0")
    assert (status, body) == (
        200,
        {"message": "Results", "estimators": [{"name": "peak_", "pages": [new]}]},
    )

    # So is the state change that finishing the tasks through process 0 makes.
    await finish(user, 0, job_id)
    status, body = await user.call(1, "GET", "/jobs/direct", params={"job_id": job_id})
    assert (status, body["job_state"]) == (200, "COMPLETED")

    # Finished: process 1 now answers from memory, and forgets it when process 0 deletes it.
    await served_from_memory(user, conn, job_id)
    params = {"job_id": job_id}
    assert await user.call(0, "DELETE", "/user/simulations", params=params) == (
        200,
        {"message": "Simulation deleted"},
    )
    for headers in ({}, {"Accept-Encoding": "gzip"}):
        assert await user.call(1, "GET", "/results", params=params, headers=headers) == (
            404,
            NOT_FOUND,
        )
    assert await user.results(1, job_id, estimator_name="peak_") == (404, NOT_FOUND)
    assert await user.results(0, job_id) == (404, NOT_FOUND)


async def test_a_delete_in_one_process_removes_the_body_files_of_the_other(user, conn, tmp_path):
    """Each process here has a data directory of its own (as on two hosts): process 1's body
    file of a finished simulation is gone when process 0's DELETE returns."""
    job_id = await running_job(user, conn)
    estimators = [{"name": "z", "pages": large_pages()}]
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "estimators": estimators})
    json = {"Content-Type": "application/json"}
    assert (await user.call(0, "POST", "/results", data=io.BytesIO(body), headers=json))[0] == 202
    await finish(user, 0, job_id)  # process 0 writes its body file
    status, body = await user.call(1, "GET", "/results", params={"job_id": job_id})
    assert (status, len(body["estimators"][0]["pages"])) == (200, 4)  # process 1 writes its own
    directories = [tmp_path / f"data{process}" / "body-files" for process in (0, 1)]

    async def both_written() -> bool:
        return all(len(list(d.glob(f"{job_id}.*.gz"))) == 1 for d in directories)

    await eventually(both_written)
    params = {"job_id": job_id}
    assert await user.call(0, "DELETE", "/user/simulations", params=params) == (
        200,
        {"message": "Simulation deleted"},
    )
    assert [sorted(d.iterdir()) for d in directories] == [[], []]


async def test_deletes_right_after_fetches(user, conn):
    """Fetches keep process 1 busy serving the simulation from memory while process 0
    deletes it: no fetch that starts after the DELETE returned gets the results."""
    jobs = []
    for _ in range(3):
        jobs.append(await running_job(user, conn))
        await upload(user, 0, jobs[-1], RESULTS["estimators"][:1])
        await finish(user, 0, jobs[-1])
        await served_from_memory(user, conn, jobs[-1])
    for job_id in jobs:
        fetching = asyncio.gather(*(user.results(1, job_id) for _ in range(20)))
        deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
        assert deleted == (200, {"message": "Simulation deleted"})
        assert await user.results(1, job_id) == (404, NOT_FOUND)
        assert {status for status, _ in await fetching} <= {200, 404}


async def test_a_lost_listener_drops_what_it_held(user, conn):
    """When a process's listening connection is cut it stops answering from memory (it may
    have missed changes), reconnects, and deletes are seen at once again."""
    job_id = await running_job(user, conn)
    await upload(user, 0, job_id, RESULTS["estimators"][:2])
    await finish(user, 0, job_id)
    await served_from_memory(user, conn, job_id)
    stored = await conn.fetch(
        "SELECT name FROM estimators WHERE simulation_id ="
        " (SELECT id FROM simulations WHERE job_id = $1) ORDER BY position",
        job_id,
    )
    listeners = "SELECT pid FROM pg_stat_activity WHERE application_name = 'yaptide-changes'"
    assert len(await conn.fetch(listeners)) == 2
    await conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({listeners}) AS l")

    async def current() -> bool:
        _, body = await user.results(1, job_id)
        return names(body) == [row["name"] for row in stored]

    await eventually(current)

    async def reconnected() -> bool:
        return len(await conn.fetch(listeners)) == 2

    await eventually(reconnected)
    await served_from_memory(user, conn, job_id)
    deleted = await user.call(0, "DELETE", "/user/simulations", params={"job_id": job_id})
    assert deleted == (200, {"message": "Simulation deleted"})
    assert await user.results(1, job_id) == (404, NOT_FOUND)


async def test_the_listener_outlives_a_failure_that_is_not_a_connection_error(database_url, conn):
    """asyncpg can answer a query on a connection the server terminated with InternalClientError
    ("another operation is in progress"), seen once in CI: the listener must reconnect, not end.
    The first attempt is made to fail that way; the next ones are the real listener."""
    from server.results.caches.changes import APP_NAME, Changes
    from server.results.caches.indexcache import IndexCache

    changes = Changes(database_url, IndexCache(10), lambda _: None)
    real_listen, attempts = changes._listen, []

    async def listen() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 12")
        await real_listen()

    changes._listen = listen  # type: ignore[method-assign]
    task = asyncio.create_task(changes.run())
    try:
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"

        async def listening() -> bool:
            return await conn.fetchval(sessions, APP_NAME) == 1

        await eventually(listening)
        assert len(attempts) == 2 and not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class CuttingProxy:
    """TCP to the test database's Unix socket that, once it has passed a `simulation_deleted`
    notification to its client, cuts the connection the way a network does: bytes go nowhere
    either way, and neither side sees a close. Later connections work."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path, self.connections = socket_path, 0
        self.writers: list[asyncio.StreamWriter] = []
        self.dropped: set[asyncio.StreamWriter] = set()  # what no longer gets any bytes

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (data := await reader.read(65536)) and writer not in self.dropped:
            writer.write(data)
            if b"simulation_deleted\x00" in data:  # a notification (not an acknowledgement)
                self.dropped = set(self.writers)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.socket_path)
        self.writers += [writer, upstream_writer]
        await asyncio.gather(self.pipe(reader, upstream_writer), self.pipe(upstream_reader, writer))


async def test_a_listener_cut_while_it_acknowledges_a_delete_reconnects(conn):
    """A cut connection (no close seen) is found by the ping's timeout and replaced within about
    LEASE + RECONNECT_AFTER; also when the cut caught the listener acknowledging a deletion
    (its acknowledgement then never gets an answer)."""
    from server.results.caches.changes import Changes
    from server.results.caches.indexcache import IndexCache

    directory = (await conn.fetchval("SHOW unix_socket_directories")).split(",")[0].strip()
    if not directory:
        pytest.skip("the test database has no Unix socket to put a proxy in front of")
    proxy = CuttingProxy(f"{directory}/.s.PGSQL.{await conn.fetchval('SHOW port')}")
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    user, database = await conn.fetchrow("SELECT current_user, current_database()")
    url = f"postgresql://{user}@127.0.0.1:{server.sockets[0].getsockname()[1]}/{database}"
    changes = Changes(url + "?sslmode=disable", IndexCache(10), lambda _: None)
    task = asyncio.create_task(changes.run())
    loop = asyncio.get_running_loop()
    try:
        await eventually(lambda: asyncio.sleep(0, changes.cache._lease_until > loop.time()))
        await conn.execute("SELECT pg_notify('simulation_deleted', 'a-job')")
        await eventually(lambda: asyncio.sleep(0, bool(proxy.dropped)))

        async def listening_again() -> bool:
            return proxy.connections == 2 and changes.cache._lease_until > loop.time()

        await eventually(listening_again, timeout=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        for writer in proxy.writers:
            writer.close()


async def finished_pair(
    aiohttp_client, make_config, conn, estimators: int | None = None
) -> tuple[Any, Any, str]:
    """Two in-process apps on one database, both signed in as alice, and a finished simulation
    of hers holding the fixture's first `estimators` (all by default): (first, second, job_id)."""
    from server.app import create_app
    from tests.helpers import login, set_task, submit

    config = make_config()  # one data_dir: one signing secret for both processes
    first, second = [await aiohttp_client(create_app(config)) for _ in range(2)]
    await login(first)
    account = {"username": "alice", "password": "password1"}
    assert (await second.post("/auth/login", json=account)).status == 202
    job_id = await submit(first)
    await set_key(conn, job_id)
    results = RESULTS["estimators"][:estimators]
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": results}
    assert (await first.post("/results", json=body)).status == 202
    identity = {"simulation_id": job_id, "update_key": KEY}
    for task_id in range(1, 5):
        for state in ("RUNNING", "COMPLETED"):
            await set_task(first, identity, task_id, task_state=state)
    return first, second, job_id


@pytest.fixture
async def late_pair(aiohttp_client, make_config, conn, monkeypatch) -> tuple[Any, Any, str]:
    """Two in-process apps on one database, each handling its `simulation_deleted`
    notifications 0.5 s late (a busy event loop), and a finished simulation of theirs that the
    second serves from memory: (first, second, job_id)."""
    from server.results.caches.changes import Changes

    on_deleted = Changes._on_deleted

    def late(self, *args):
        asyncio.get_running_loop().call_later(0.5, on_deleted, self, *args)

    monkeypatch.setattr(Changes, "_on_deleted", late)
    first, second, job_id = await finished_pair(aiohttp_client, make_config, conn, 1)

    async def from_memory() -> bool:  # a rename behind the server's back does not show
        before = await (await second.get("/results", params={"job_id": job_id})).json()
        await conn.execute(
            "UPDATE estimators SET name = name || '+' WHERE simulation_id ="
            " (SELECT id FROM simulations WHERE job_id = $1)",
            job_id,
        )
        after = await (await second.get("/results", params={"job_id": job_id})).json()
        return names(after) == names(before)

    await eventually(from_memory)
    return first, second, job_id


async def test_a_delete_returns_once_every_process_has_forgotten_the_simulation(late_pair):
    """A process may take a request for results before the `simulation_deleted` notification
    that arrived with it (both wait on its event loop): until it acknowledges, it serves the
    deleted results from memory, its lease renewed by every ping. So DELETE must return only
    once every listening process acknowledged (server/results/caches/changes.py): the fetch right
    after the DELETE must be 404."""
    first, second, job_id = late_pair
    deleted = await first.delete("/user/simulations", params={"job_id": job_id})
    assert deleted.status == 200, await deleted.text()
    response = await second.get("/results", params={"job_id": job_id})
    assert (response.status, await response.json()) == (404, NOT_FOUND)


async def test_a_second_delete_after_one_that_waited_for_a_lock_waits_out_the_lease(
    late_pair, conn, database_url
):
    """A second DELETE of a simulation deleted just now (a double click) answers its 404 only
    once the lease has passed since the deletion. The deletion's time was its transaction's
    start: a DELETE that waited longer than the lease for a row lock (a worker's last upload)
    looked old at its commit, the second DELETE's 404 came at once, and the other process
    still served the results after it."""
    from tests.test_user_delete import wait_for_lock_wait

    first, second, job_id = late_pair
    params = {"job_id": job_id}
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM simulations WHERE job_id = $1 FOR UPDATE", job_id)
        deleting = asyncio.ensure_future(first.delete("/user/simulations", params=params))
        await wait_for_lock_wait(database_url)
        await asyncio.sleep(1.5)

    async def committed() -> bool:
        sql = "SELECT count(*) FROM simulations WHERE job_id = $1"
        return await conn.fetchval(sql, job_id) == 0

    await eventually(committed, timeout=5)
    again = await first.delete("/user/simulations", params=params)
    assert (again.status, await again.json()) == (404, NOT_FOUND)
    response = await second.get("/results", params=params)
    assert (response.status, await response.json()) == (404, NOT_FOUND)
    assert (await deleting).status == 200


async def test_a_database_restored_under_the_server_serves_none_of_its_old_pages(
    aiohttp_client, make_config, scratch_url, database_url
):
    """The database restored from a backup while the server runs (here dropped and made again
    from a snapshot): the server reconnects by itself, and the ids and page versions the
    restored sequences hand out again are other results' than those cached before. The page
    and body caches were kept, and the next user got the earlier user's results."""
    from urllib.parse import urlsplit

    from server.app import create_app
    from tests.helpers import login, migrated, set_task, submit

    async def finished(client, estimators: list[Any]) -> str:
        job_id = await submit(client)
        scratch = await asyncpg.connect(scratch_url)
        try:
            await set_key(scratch, job_id)
        finally:
            await scratch.close()
        body = {"simulation_id": job_id, "update_key": KEY, "estimators": estimators}
        assert (await client.post("/results", json=body)).status == 202
        identity = {"simulation_id": job_id, "update_key": KEY}
        for task_id in range(1, 5):
            for state in ("RUNNING", "COMPLETED"):
                await set_task(client, identity, task_id, task_state=state)
        return job_id

    def one_page(name: str, values: list[int]) -> list[dict[str, Any]]:
        page = {"page_number": 0, "name": name, "data": {"values": values}}
        return [{"name": "dose", "pages": [page]}]

    await migrated(scratch_url)
    scratch_name = urlsplit(scratch_url).path.lstrip("/")
    snapshot = f"{scratch_name}_snapshot"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{snapshot}" TEMPLATE "{scratch_name}"')
        client = await aiohttp_client(create_app(make_config(database={"url": scratch_url})))
        await login(client, "alice")
        job_id = await finished(client, one_page("alice", [1, 2, 3]))
        response = await client.get("/results", params={"job_id": job_id})
        assert (await response.json())["estimators"] == one_page("alice", [1, 2, 3])

        await admin.execute(f'DROP DATABASE "{scratch_name}" WITH (FORCE)')  # the restore
        await admin.execute(f'CREATE DATABASE "{scratch_name}" TEMPLATE "{snapshot}"')

        async def registered() -> bool:
            body = {"username": "bob", "password": "password1"}
            return (await client.put("/auth/register", json=body)).status == 201

        await eventually(registered)
        account = {"username": "bob", "password": "password1"}
        assert (await client.post("/auth/login", json=account)).status == 202
        job_id = await finished(client, one_page("bob", [7, 8, 9]))
        response = await client.get("/results", params={"job_id": job_id})
        assert (response.status, await response.json()) == (
            200,
            {"message": "Results", "estimators": one_page("bob", [7, 8, 9])},
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{snapshot}" WITH (FORCE)')
        await admin.close()


async def pinged_again(conn: asyncpg.Connection, count: int) -> None:
    """Wait until each of `count` listening sessions has started a ping after one seen ended:
    its process had the answer to that one (they are sent one after the other), which renewed
    its lease."""
    from server.database.sql import query
    from server.results.caches.changes import APP_NAME

    pings = (
        "SELECT pid, query_start FROM pg_stat_activity"
        " WHERE application_name = $1 AND query = $2 AND state = 'idle'"
    )

    async def seen() -> dict[int, Any] | None:
        rows = await conn.fetch(pings, APP_NAME, query("changes_ping"))
        return {row["pid"]: row["query_start"] for row in rows} if len(rows) == count else None

    first = await eventually(seen)

    async def again() -> bool:
        now = await seen()
        return now is not None and all(now.get(pid, start) > start for pid, start in first.items())

    await eventually(again)


async def test_results_read_while_not_listening_are_not_trusted_once_listening_again(
    aiohttp_client, make_config, conn, monkeypatch
):
    """A process whose change listener is away serves finished results only after checking the
    database; one it read then may be deleted before it listens again (the notification went
    to nobody). Listening again, it must drop what it read meanwhile: kept, the deleted results
    were served from memory, a 200, as soon as its lease was renewed. Here the listeners'
    reconnection is held back until the read and the delete are done."""
    from server.results.caches.changes import APP_NAME, Changes

    real_listen, held, gate = Changes._listen, [], asyncio.Event()
    gate.set()

    async def listen(self: Changes) -> None:
        if not gate.is_set():
            held.append(self)
            await gate.wait()
        await real_listen(self)

    monkeypatch.setattr(Changes, "_listen", listen)
    first, second, job_id = await finished_pair(aiohttp_client, make_config, conn)
    await pinged_again(conn, 2)

    gate.clear()
    sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
    await conn.execute(sessions, APP_NAME)
    await eventually(lambda: asyncio.sleep(0, len(held) == 2))  # both lost, not listening
    params = {"job_id": job_id}
    response = await second.get("/results", params=params)
    assert (response.status, await response.json()) == (
        200,
        {"message": "Results", "estimators": reference()},
    )
    deleted = await first.delete("/user/simulations", params=params)
    assert (deleted.status, await deleted.json()) == (200, {"message": "Simulation deleted"})
    gate.set()
    await pinged_again(conn, 2)  # listening again, and trusting what it keeps
    response = await second.get("/results", params=params)
    assert (response.status, await response.json()) == (404, NOT_FOUND)
