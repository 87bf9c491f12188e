"""Memory and disk under hostile or careless clients holding a key or a session: workers' bodies
built to cost their parse many times their size, uploads of many tiny pages, readers of large
answers that never read; measured on real `run.py` processes (their RSS from /proc) on the test
PostgreSQL."""

import asyncio
import io
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from tests.helpers import KEY, payload, set_key
from tests.servers import free_port, rss_mib, start, wait_ready

MIB = 1 << 20


class Running:
    def __init__(self, base: str, process: subprocess.Popen) -> None:
        self.base = base
        self.process = process
        self.pid = process.pid


async def _serve(database_url: str, data_dir: Path, **env: Any) -> Running:
    port = free_port()
    process = start(database_url, data_dir, port, **{k: str(v) for k, v in env.items()})
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, base, process)
    return Running(base, process)


def _stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


@pytest.fixture
async def serve(database_url: str, conn: asyncpg.Connection, tmp_path: Path):
    """serve(**env) -> Running: a run.py (runner none) on the test database."""
    started: list[Running] = []

    async def make(**env: Any) -> Running:
        running = await _serve(database_url, tmp_path / f"data{len(started)}", **env)
        started.append(running)
        return running

    yield make
    for running in started:
        _stop(running)


def fresh() -> aiohttp.ClientSession:
    """A client session opening a new connection for each request."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def logged_in(http: aiohttp.ClientSession, base: str, name: str = "alice") -> None:
    body = {"username": name, "password": "password1"}
    async with http.put(base + "/auth/register", json=body) as response:
        assert response.status == 201, await response.text()
    async with http.post(base + "/auth/login", json=body) as response:
        assert response.status == 202, await response.text()


async def submitted(http: aiohttp.ClientSession, base: str, conn, **changes: Any) -> str:
    async with http.post(base + "/jobs/direct", json=payload(**changes)) as response:
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]
    await set_key(conn, job_id, KEY)
    return job_id


class PeakRss:
    """The largest VmRSS of `pid` seen while the block runs (sampled every 10 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_mib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (AssertionError, OSError):
                return
            time.sleep(0.01)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.before


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


# A worker with a valid update key: its body's parse is not bounded by the body budget


WORKER_LIMIT = 32 * MIB
BUDGET = 64 * MIB


def empty_arrays(size: int) -> bytes:
    """`[[],[],...]`: about 3 bytes of JSON for each Python list (~56 bytes) it parses into."""
    count = (size - 16) // 3
    return b"[" + b"[]," * (count - 1) + b"[]]"


async def _time_liveness(base: str, stop: asyncio.Event) -> float:
    """The longest wait for `GET /` answers while `stop` is not set."""
    worst = 0.0
    async with fresh() as http:
        while not stop.is_set():
            began = time.monotonic()
            async with http.get(base + "/") as response:
                assert response.status == 200
            worst = max(worst, time.monotonic() - began)
            await asyncio.sleep(0.05)
    return worst


async def limited_server_with_a_job(serve, conn) -> tuple[Running, str]:
    """A server whose worker bodies and budget are small, and a job of its user."""
    server = await serve(
        YAPTIDE_SERVER_WORKER_MAX_BODY_SIZE=WORKER_LIMIT,
        YAPTIDE_SERVER_MAX_BODY_SIZE=WORKER_LIMIT,
        YAPTIDE_SERVER_BODY_BUDGET=BUDGET,
    )
    async with session() as http:
        await logged_in(http, server.base)
        return server, await submitted(http, server.base, conn)


@pytest.mark.parametrize("path", ["/logfiles", "/tasks"])
async def test_a_workers_body_of_empty_arrays_stays_within_the_body_budget(
    serve, conn, path
) -> None:
    """A worker holding its simulation's update key (in the header, checked before the body)
    sends a body within worker_max_body_size made of `[[],[],...]`. Users' bodies hold their
    parse from the budget (README "Security and limits"); this one was parsed unaccounted:
    ~20 times its size in Python lists, on the event loop."""
    server, job_id = await limited_server_with_a_job(serve, conn)
    head = b'{"simulation_id":"%s","task_id":1,' % job_id.encode()
    if path == "/logfiles":
        body = head + b'"logfiles":{"a":' + empty_arrays(WORKER_LIMIT - 200) + b"}}"
    else:
        body = head + b'"update_dict":{"x":' + empty_arrays(WORKER_LIMIT - 200) + b"}}"
    assert len(body) <= WORKER_LIMIT
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    stop = asyncio.Event()
    with PeakRss(server.pid) as rss:
        liveness = asyncio.create_task(_time_liveness(server.base, stop))
        async with (
            fresh() as http,
            http.post(server.base + path, data=io.BytesIO(body), headers=headers) as response,
        ):
            status = response.status
            answer = await response.json()
        stop.set()
        worst = await liveness
    assert status in (400, 413), (status, answer)
    # The body itself and its parse, bounded by the budget (plus allocator slack).
    assert rss.growth <= (BUDGET + 32 * MIB) / MIB, f"RSS grew by {rss.growth:.0f} MiB"
    assert worst < 2.0, f"GET / waited {worst:.1f} s meanwhile"


# Result pages: what one costs in the database is not what the quota counts


async def _pages_on_disk(conn) -> int:
    """Bytes the results tables take in PostgreSQL (heap, indexes, TOAST)."""
    return await conn.fetchval(
        "SELECT pg_total_relation_size('pages') + pg_total_relation_size('estimators')"
    )


async def test_many_tiny_pages_are_no_way_around_the_quota(serve, conn) -> None:
    """A worker uploads 9,000 pages of `{"page_number": n}` (about 200 KB of JSON, under the
    pages an upload may hold) to a user whose quota is 1 MiB. The quota counted a page's
    compressed data (~20 bytes), not its row (~100 bytes: header, ids, empty name and
    dimensions, CRCs, sizes, version) and index entry: the upload was accepted, and the results
    tables took several times the quota."""
    quota = 1 * MIB
    server = await serve(YAPTIDE_JOBS_USER_QUOTA=quota)
    async with session() as http:
        await logged_in(http, server.base)
        job_id = await submitted(http, server.base, conn)
    await conn.execute("VACUUM (FULL) pages")
    await conn.execute("VACUUM (FULL) estimators")
    empty = await _pages_on_disk(conn)
    pages = [{"page_number": n} for n in range(9_000)]
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": [{"name": "z", "pages": pages}]}
    )
    async with (
        fresh() as http,
        http.post(server.base + "/results", data=io.BytesIO(body)) as response,
    ):
        status, answer = response.status, await response.json()
    used = await _pages_on_disk(conn) - empty
    counted = await conn.fetchval("SELECT stored_bytes FROM simulations WHERE job_id = $1", job_id)
    # Past the quota: 413 and nothing stored; else what is stored fits in it.
    assert status == 413 or used <= quota, (
        f"{status} {answer}: pages take {used} bytes in PostgreSQL, the quota is {quota} "
        f"(the simulation counts {counted})"
    )


async def test_an_upload_of_many_tiny_pages_stays_within_the_body_budget(serve, conn) -> None:
    """A worker's POST /results of 9 MB (worker_max_body_size: 32 MiB here) holding 400,000
    pages of `{"page_number": n}`: each page becomes a StoredPage with its own bytes, name,
    dimensions list and, in the insert, its entries in eight parameter lists and asyncpg's
    encoding: hundreds of bytes of Python objects per 22 bytes of JSON (measured: 300 MiB for
    this body, 885 MiB for 1.2 million pages in 27 MB; ~8 GB at the default 256 MiB limit)."""
    server, job_id = await limited_server_with_a_job(serve, conn)
    pages = [{"page_number": n} for n in range(400_000)]
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": [{"name": "z", "pages": pages}]}
    )
    del pages
    assert len(body) <= WORKER_LIMIT
    with PeakRss(server.pid) as rss:
        async with (
            fresh() as http,
            http.post(server.base + "/results", data=io.BytesIO(body)) as response,
        ):
            status, answer = response.status, await response.json()
    assert status == 413 and answer["message"].startswith("Request body too large once parsed")
    assert rss.growth <= (BUDGET + 64 * MIB) / MIB, f"RSS grew by {rss.growth:.0f} MiB"


# Clients that start a large answer and do not read it


def _stalled_get(
    port: int, target: str, cookies: dict[str, str], encoding: str = "identity"
) -> socket.socket:
    """A connection that sends a GET and never reads (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
        f"Accept-Encoding: {encoding}\r\n\r\n".encode()
    )
    return sock


async def test_stalled_readers_of_a_large_log_file_do_not_multiply_memory(serve, conn) -> None:
    """A simulation holds one 48 MB log file (a worker may send up to worker_max_body_size,
    256 MiB). Eight connections of its owner ask for GET /logfiles and never read. Each request
    read the whole file from the database (asyncpg's buffer and the decoded str) before it
    wrote a byte, and kept it for body_timeout: ~70 MB per stalled client, with no bound on how
    many a user opens. The file is stored and read in parts of 1 Mi characters."""
    server = await serve(YAPTIDE_SERVER_BODY_TIMEOUT=60)
    async with session() as http:
        await logged_in(http, server.base)
        job_id = await submitted(http, server.base, conn)
        cookies = {c.key: c.value for c in http.cookie_jar}
    log = "simulated line of output\n" * (48 * 1000 * 1000 // 25)
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "logfiles": {"big": log}})
    del log
    async with (
        fresh() as http,
        http.post(server.base + "/logfiles", data=io.BytesIO(body)) as response,
    ):
        assert response.status == 202, await response.text()
    del body
    await asyncio.sleep(1.0)
    port = int(server.base.rsplit(":", 1)[1])
    socks = []
    with PeakRss(server.pid) as rss:
        for _ in range(8):
            socks.append(_stalled_get(port, f"/logfiles?job_id={job_id}", cookies))
        await asyncio.sleep(6.0)
    held = rss_mib(server.pid) - rss.before  # still held after 6 s
    for sock in socks:
        sock.close()
    assert rss.growth <= 128, f"RSS grew by {rss.growth:.0f} MiB ({held:.0f} MiB still held)"


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_stalled_readers_of_a_large_result_page_hold_a_bounded_piece_each(
    serve, conn, encoding
) -> None:
    """A running simulation's result is one page of 800,000 values (15 MB of JSON, ~7 MB
    stored: a 100x100x80 mesh). After one complete fetch (the page cache holds the segment),
    100 connections of its owner ask for GET /results and never read. A streamed body is
    written in pieces of at most 1 MiB (server/results/fetch/writing.py), so each stalled connection
    should hold a few MiB; it holds the whole stored page (gzip: the segment is copied into
    the gather buffer and handed to the transport whole) or about twice it (identity: the
    inflater's unconsumed_tail copy of the segment, plus pieces) until body_timeout."""

    server = await serve(YAPTIDE_SERVER_BODY_TIMEOUT=60)
    async with session() as http:
        await logged_in(http, server.base)
        job_id = await submitted(http, server.base, conn)
        cookies = {c.key: c.value for c in http.cookie_jar}
    values = [random.random() for _ in range(800_000)]
    pages = [{"metadata": {"page_number": 1, "name": "dose"}, "data": {"values": values}}]
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": [{"name": "z", "pages": pages}]}
    )
    async with fresh() as http:
        async with http.post(server.base + "/results", data=io.BytesIO(body)) as response:
            assert response.status == 202, await response.text()
        headers = {"Accept-Encoding": encoding}
        target = f"{server.base}/results?job_id={job_id}"
        async with http.get(target, cookies=cookies, headers=headers) as response:
            assert response.status == 200
            await response.read()
    await asyncio.sleep(1.0)
    port = int(server.base.rsplit(":", 1)[1])
    socks = []
    with PeakRss(server.pid) as rss:
        for _ in range(100):
            socks.append(_stalled_get(port, f"/results?job_id={job_id}", cookies, encoding))
        await asyncio.sleep(8.0)
    held = rss_mib(server.pid) - rss.before
    for sock in socks:
        sock.close()
    # 3 MiB a connection: a 1 MiB piece in the transport, one being gathered, the inflater.
    assert held <= 100 * 3 + 32, f"{held:.0f} MiB held by 100 stalled readers"
