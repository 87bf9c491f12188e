"""The database going away under a running server: PostgreSQL stopped (restart, crash, upgrade),
then started again, or frozen (a storage stall, a network cut with no reset), then woken.
Clients get a JSON 503 to retry, never a 500 nor a request that waits for ever, and the server
carries on by itself once it is back. The tests run a PostgreSQL of their own."""

import asyncio
import contextlib
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp import web

from server.app import create_app
from server.database.embedded import embedded_postgres, pgserver
from server.keys import POOL
from tests.helpers import (
    KEY,
    login,
    payload,
    server_tmp_dir,
    set_key,
    submit,
    upload,
    upload_pages,
)

ROUTES = [
    ("GET", "/user/simulations"),
    ("GET", "/jobs/direct?job_id={job_id}"),
    ("GET", "/results?job_id={job_id}"),
    ("GET", "/auth/status"),
    ("POST", "/auth/login"),
    ("POST", "/jobs/direct"),
]


def pg_ctl(pgdata: Path, *args: str) -> None:
    """pg_ctl of the embedded PostgreSQL, as the user it runs as."""
    binaries = pgserver.postgres_server.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]
    user = "pgserver" if os.geteuid() == 0 else None
    pgserver.pgexec.pgexec("pg_ctl", ("-D", str(pgdata), *args), bin_path=binaries, user=user)


@pytest.fixture
def own_database() -> Iterator[tuple[str, Path]]:
    """(URL, data directory) of a PostgreSQL of this test's own, which the tests stop and start."""
    with server_tmp_dir() as directory, embedded_postgres(directory, restart=False) as url:
        yield url, directory / "postgres"


async def _request(client, method: str, path: str) -> tuple[int, dict, bool]:
    """(status, JSON body, whether Retry-After is set) of one of ROUTES, with a valid body."""
    body = {"username": "alice", "password": "password1"} if "login" in path else None
    response = await client.request(
        method, path, json=payload() if path == "/jobs/direct" else body
    )
    return response.status, await response.json(), "Retry-After" in response.headers


async def test_a_stopped_database_is_a_503_and_its_return_is_seen(
    aiohttp_client, make_config, own_database
):
    url, pgdata = own_database
    client = await aiohttp_client(create_app(make_config(database={"url": url})))
    await login(client)
    job_id = await submit(client, payload())
    await asyncio.to_thread(pg_ctl, pgdata, "stop", "-m", "fast")
    try:
        for method, path in ROUTES:
            answer = await _request(client, method, path.format(job_id=job_id))
            assert answer == (503, {"message": "Database unavailable"}, True), (method, path)
    finally:
        await asyncio.to_thread(start_again, url, pgdata)
    response = await client.get("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202


def start_again(url: str, pgdata: Path) -> None:
    """Start the stopped PostgreSQL of `url` again, on the socket it had."""
    options = f'-h "" -k {parse_qs(urlsplit(url).query)["host"][0]}'
    pg_ctl(pgdata, "start", "-w", "-l", str(pgdata / "log"), "-o", options)


def _processes(pgdata: Path) -> list[int]:
    """The postmaster of `pgdata` and every process it started."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def frozen(pgdata: Path) -> Iterator[None]:
    """PostgreSQL stopped dead (SIGSTOP): connections stay open, nothing answers."""
    pids = _processes(pgdata)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def user_with_a_job(aiohttp_client, make_config, url: str, command_timeout: float):
    """A logged-in client of a server on `url`, and a job of its user."""
    config = make_config(database={"url": url, "command_timeout": command_timeout})
    client = await aiohttp_client(create_app(config))
    await login(client)
    return client, await submit(client, payload())


async def test_fetches_of_running_results_sharing_a_check_all_get_the_503(
    aiohttp_client, make_config, own_database
):
    """A running simulation's results are checked against its row at every fetch, with one
    query for all the fetches asking at once (server/results/caches/heads.py): with the database
    frozen each of them is a 503 within the command timeout, and once it is back the next
    fetch gets the results. The user is trusted meanwhile (user_cache_ttl): the check of the
    results is what fails."""
    url, pgdata = own_database
    database = {"url": url, "command_timeout": 1}
    client = await aiohttp_client(
        create_app(make_config(database=database, auth={"user_cache_ttl": 600}))
    )
    await login(client)
    job_id = await submit(client, payload())
    conn = await asyncpg.connect(url)
    await set_key(conn, job_id)
    await conn.close()
    assert (await upload(client, job_id)).status == 202
    await asyncio.sleep(0.5)  # the upload's change notification is in (it drops the index kept)
    before = await client.get("/results", params={"job_id": job_id})
    assert before.status == 200
    with frozen(pgdata):
        fetches = [_request(client, "GET", f"/results?job_id={job_id}") for _ in range(5)]
        async with asyncio.timeout(30):  # a fetch left waiting would wait for ever
            answers = await asyncio.gather(*fetches)
    assert answers == [(503, {"message": "Database unavailable"}, True)] * 5
    after = await client.get("/results", params={"job_id": job_id})
    assert (after.status, await after.read()) == (200, await before.read())


async def test_a_frozen_database_is_a_503_within_the_command_timeout(
    aiohttp_client, make_config, own_database
):
    url, pgdata = own_database
    client, job_id = await user_with_a_job(aiohttp_client, make_config, url, command_timeout=1)
    with frozen(pgdata):
        for method, path in ROUTES:
            started = time.monotonic()
            async with asyncio.timeout(30):  # before the fix: for ever
                answer = await _request(client, method, path.format(job_id=job_id))
            assert answer == (503, {"message": "Database unavailable"}, True), (method, path)
            assert time.monotonic() - started < 10, (method, path)  # 1 s, or 2 for a new one
    response = await client.get("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    body = await response.json()
    assert body["job_state"] == "PENDING"


async def test_a_database_frozen_while_a_large_body_is_sent_cuts_it_short(
    aiohttp_client, make_config, own_database
):
    """Once a streamed body has begun, a 503 cannot follow: the connection is cut, and the client
    sees an incomplete body (never the error's bytes inside it, nor a wait for ever)."""
    url, pgdata = own_database
    server = {"page_cache_size": 0, "body_cache_size": 0}  # every batch of pages read anew
    client = await aiohttp_client(
        create_app(make_config(database={"url": url, "command_timeout": 1}, server=server))
    )
    await login(client)
    job_id = await submit(client, payload())
    conn = await asyncpg.connect(url)
    await set_key(conn, job_id)
    await conn.close()
    values = [random.random() for _ in range(60_000)]  # 1.2 MB a page: 5 batches of pages
    pages = [
        {"metadata": {"page_number": n, "name": f"p{n}"}, "data": {"values": values}}
        for n in range(1, 6)
    ]
    assert await upload_pages(client, job_id, pages) == 202
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((client.server.host, client.server.port))
        sock.sendall(
            f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: x\r\n"
            f"Cookie: access_token={cookie}\r\nAccept-Encoding: identity\r\n\r\n".encode()
        )
        head = await asyncio.to_thread(sock.recv, 4096)  # the body has begun
        with frozen(pgdata):
            received = head + await asyncio.to_thread(_read_all, sock)
    header, _, body = received.partition(b"\r\n\r\n")
    assert header.startswith(b"HTTP/1.1 200 OK"), header
    length = int(header.lower().partition(b"content-length: ")[2].split()[0])
    assert len(body) < length
    assert b"Database unavailable" not in body and b"HTTP/1.1" not in body


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (at most 20 s)."""
    sock.settimeout(20)  # before the fix: an error response inside the body, then kept open
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_database_with_no_connection_left_is_a_503(
    aiohttp_client, make_config, own_database
):
    """Two servers on one database each fit PostgreSQL's max_connections (checked at start),
    but not together; or other clients hold the rest. A request that needed a new connection
    then was a 500 with a traceback (TooManyConnectionsError: two real servers with pools of
    60 on a max_connections of 100 answered 158 of 450 concurrent GETs so). It is a 503 to
    retry, as when PostgreSQL is away."""
    url, _ = own_database
    client = await aiohttp_client(create_app(make_config(database={"url": url})))
    await login(client)
    others = []  # another server's connections: every one PostgreSQL has left
    try:
        with contextlib.suppress(asyncpg.TooManyConnectionsError):
            while True:
                others.append(await asyncpg.connect(url))
        answers = await asyncio.gather(*(client.get("/user/simulations") for _ in range(8)))
        statuses = sorted(answer.status for answer in answers)
        assert set(statuses) == {200, 503}, statuses
        refused = next(answer for answer in answers if answer.status == 503)
        assert await refused.json() == {"message": "Database unavailable"}
        assert refused.headers["Retry-After"] == "1"
    finally:
        for other in others:
            await other.close()
    assert (await client.get("/user/simulations")).status == 200


async def test_a_request_on_a_pooled_connection_gets_its_503_within_the_command_timeout(
    aiohttp_client, make_config, own_database
):
    """README, database.command_timeout: a statement's request gets its 503 within twice the
    setting. A statement on a connection the pool already had times out after that long, and
    the request then waits as long again while asyncpg tries to send PostgreSQL its cancel
    (command_timeout 3: a 503 after 6 s; the README promised it after 3)."""
    url, pgdata = own_database
    client, job_id = await user_with_a_job(aiohttp_client, make_config, url, command_timeout=3)
    with frozen(pgdata):
        started = time.monotonic()
        answer = await _request(client, "GET", f"/jobs/direct?job_id={job_id}")
        elapsed = time.monotonic() - started
    assert answer == (503, {"message": "Database unavailable"}, True)
    assert elapsed < 2 * 3 + 1, f"a 503 after {elapsed:.1f} s"


async def test_a_crash_loses_no_state_move_a_worker_was_answered(
    aiohttp_client, make_config, own_database
):
    """A task's move to RUNNING answered 202 is on disk: PostgreSQL crashing right after it
    (stopped with `-m immediate`: no checkpoint, what was not flushed is gone) keeps the task
    RUNNING, and its end is then taken. Before the fix the move committed without waiting for
    the disk, as progress reports do: lost, it made the worker's COMPLETED a 409 (the task
    stayed PENDING for ever). The WAL writer is slowed so that such a commit stays unflushed
    until the crash."""
    url, pgdata = own_database
    client, job_id = await user_with_a_job(aiohttp_client, make_config, url, command_timeout=5)
    conn = await asyncpg.connect(url)
    await set_key(conn, job_id)
    await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
    await conn.execute("SELECT pg_reload_conf()")
    await conn.close()
    # A progress report wakes the WAL writer from its hibernation; once it has written that,
    # it waits wal_writer_delay before it looks again.
    assert await _report(client, job_id, 2, {"simulated_primaries": 1}) == 202
    await asyncio.sleep(1)
    assert await _report(client, job_id, 1, {"task_state": "RUNNING"}) == 202
    await asyncio.to_thread(pg_ctl, pgdata, "stop", "-m", "immediate")
    await asyncio.to_thread(start_again, url, pgdata)
    assert await _task_states(client, job_id) == ["RUNNING", "PENDING", "PENDING", "PENDING"]
    assert await _report(client, job_id, 1, {"task_state": "COMPLETED"}) == 202
    assert await _task_states(client, job_id) == ["COMPLETED", "PENDING", "PENDING", "PENDING"]


async def _report(client, job_id: str, task_id: int, update: dict) -> int:
    """The status of a worker's `POST /tasks`, sent again while the server answers 503 (its
    pool's connections were cut by the crash)."""
    body = {"simulation_id": job_id, "update_key": KEY, "task_id": task_id, "update_dict": update}
    for _ in range(50):
        response = await client.post("/tasks", json=body)
        if response.status != 503:
            return response.status
        await asyncio.sleep(0.1)
    raise AssertionError("still 503")


async def _task_states(client, job_id: str) -> list[str]:
    response = await client.get("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200, await response.text()
    return [task["task_state"] for task in (await response.json())["job_tasks_status"]]


async def test_a_connection_lost_inside_a_transaction_is_a_503(aiohttp_client, make_config):
    """The connection of a write's transaction cut mid-statement (PostgreSQL killed, or
    crashed out of disk for its WAL): when the close was seen before the transaction's exit,
    the statement's error was replaced by that exit failing on the closed connection
    (asyncpg's InterfaceError), and the answer was a 500 with a traceback (half of the user
    submissions sent as a reviewer killed PostgreSQL). A route of the test's own gives its
    backend that end, and lets the close be seen before its transaction exits."""

    async def cut(request: web.Request) -> web.Response:
        async with request.app[POOL].acquire() as conn, conn.transaction():
            try:
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            except asyncpg.AdminShutdownError:
                await asyncio.sleep(0.5)  # the connection's close is seen meanwhile
                raise
        return web.Response()

    app = create_app(make_config())
    app.router.add_post("/cut", cut)
    client = await aiohttp_client(app)
    response = await client.post("/cut")
    assert (response.status, await response.json()) == (503, {"message": "Database unavailable"})
    assert response.headers["Retry-After"] == "1"
