"""Review B: hostile-client findings, each against a real `python run.py` process on the test
database (real HTTP, no mocks). Each test states the expected behaviour; they FAIL on the code
as reviewed.

1. A request body refused as too large (413) stays in memory after its request: the 413 is
   built before the body is read (server/limits/bodies.py:115, `too_large = PayloadTooLarge(...)`)
   and raised from the frame that holds the body, so exception -> traceback -> frame -> the
   local `too_large` is a reference cycle that keeps the whole bytearray alive until a full
   garbage collection, which an idle or lightly loaded server does not run. The body budget is
   given back meanwhile, so it bounds nothing: each ~1 MB deflate bomb to POST /logfiles with
   no valid key (anyone) leaves `server.worker_max_body_size` bytes behind.
2. PUT /auth/register computes an argon2 hash for every request, unthrottled, before it learns
   that the username is taken, on the same `auth.hash_concurrency` slots as logins: a flood of
   registrations (all 409) holds legitimate logins up for as long as it lasts.
3. POST /user/update checks `current_password` with no throttle: with a session, the password
   can be guessed at hashing speed, past the limit POST /auth/login enforces.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.helpers import eventually

RUN_PY = str(Path(__file__).resolve().parent.parent / "run.py")
MIB = 1 << 20


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base: str) -> None:
        self.process, self.base = process, base


@pytest.fixture
async def server(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Server]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")}
    env |= {
        "DATABASE_URL": database_url,
        "YAPTIDE_SERVER_PORT": str(port),
        "YAPTIDE_DATABASE_DATA_DIR": str(tmp_path / "data"),
        "YAPTIDE_RUNNER_KIND": "none",
        "YAPTIDE_AUTH_SECRET": "a-signing-secret-of-review-b-tests-0123456789",
        **getattr(request, "param", {}),
    }
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            ["nice", "-n", "10", sys.executable, RUN_PY], env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                assert process.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    async with http.get(base + "/") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(up, timeout=60)
        yield Server(process, base)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _deflate_bomb(inflated: int) -> bytes:
    """A zlib body of a few hundred KiB that inflates to `inflated` bytes of a worker body whose
    update key (inside it) is nobody's."""
    packer = zlib.compressobj(9)
    head = b'{"simulation_id":"x","update_key":"nobody","logfiles":{"a":"'
    parts = [packer.compress(head)]
    block = b"a" * MIB
    for _ in range(inflated // MIB):
        parts.append(packer.compress(block))
    parts.append(packer.compress(b'"}}'))
    parts.append(packer.flush())
    return b"".join(parts)


LIMIT = 32 * MIB
BUDGET = 64 * MIB


@pytest.mark.parametrize(
    "server",
    [
        {
            "YAPTIDE_SERVER_MAX_BODY_SIZE": str(LIMIT),
            "YAPTIDE_SERVER_WORKER_MAX_BODY_SIZE": str(LIMIT),
            "YAPTIDE_SERVER_BODY_BUDGET": str(BUDGET),
        }
    ],
    indirect=True,
)
async def test_refused_bodies_do_not_stay_in_memory(server: Server) -> None:
    """Anyone: ten ~100 KB deflate bodies, each refused with 413 at LIMIT bytes. Expected: the
    server's RSS grows by at most the body budget (each body is dropped with its request).
    Observed on the reviewed code: it grows by about LIMIT per request, until the garbage
    collector happens to run a full collection (~200 MiB peak here against a 64 MiB budget;
    ~263 MB per request and 3.0 GB after 11 requests, not given back, with the default limits)."""
    bomb = _deflate_bomb(LIMIT + 4 * MIB)
    headers = {"Content-Type": "application/json", "Content-Encoding": "deflate"}
    pid = server.process.pid
    async with aiohttp.ClientSession() as http:
        async with http.get(server.base + "/") as response:
            assert response.status == 200
        before = peak = _rss_kib(pid)
        for _ in range(12):  # one after the other: never more than one body at once
            async with http.post(server.base + "/logfiles", data=bomb, headers=headers) as response:
                assert response.status == 413, await response.text()
            peak = max(peak, _rss_kib(pid))
            print("RSS after a refused body:", _rss_kib(pid) // 1024, "MiB")
    grown = (peak - before) * 1024
    print(f"RSS peak grew by {grown / MIB:.0f} MiB over 12 refused bodies of {LIMIT // MIB} MiB")
    # At most one body is being read at any time: the budget (64 MiB) and one body's worth of
    # slack for the allocator are plenty.
    assert grown <= BUDGET + LIMIT, (
        f"RSS grew by {grown / MIB:.0f} MiB (budget {BUDGET // MIB} MiB)"
    )


async def test_registration_flood_does_not_hold_up_logins(server: Server) -> None:
    """Anyone: 40 concurrent registrations of a taken username (each 409). Expected: refused
    cheaply or throttled (429), so that a user's login meanwhile answers as fast as usual.
    Observed: none is throttled, each costs an argon2 hash on the login's slots, and the login
    waits several seconds (0.26 s -> 6.9 s with 30 at once in the review's manual run)."""
    account = {"username": "alice", "password": "password1"}
    async with aiohttp.ClientSession() as http:
        async with http.put(server.base + "/auth/register", json=account) as response:
            assert response.status == 201
        started = time.monotonic()
        async with http.post(server.base + "/auth/login", json=account) as response:
            assert response.status == 202
        alone = time.monotonic() - started

        async def register() -> int:
            async with http.put(server.base + "/auth/register", json=account) as response:
                return response.status

        flood = [asyncio.create_task(register()) for _ in range(40)]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        async with http.post(server.base + "/auth/login", json=account) as response:
            assert response.status == 202
        during = time.monotonic() - started
        statuses = await asyncio.gather(*flood)
    print(f"login alone {alone:.2f} s, during the flood {during:.2f} s; flood: {statuses}")
    assert 429 in statuses or during < alone + 2.0, (
        f"login took {during:.2f} s during the flood (alone {alone:.2f} s); "
        f"registrations answered {sorted(set(statuses))}"
    )


@pytest.mark.parametrize("server", [{"YAPTIDE_AUTH_LOGIN_ATTEMPTS": "3"}], indirect=True)
async def test_current_password_guesses_are_throttled(server: Server) -> None:
    """A session (a stolen access cookie) guessing the user's password through POST
    /user/update. Expected: limited like POST /auth/login (auth.login_attempts, 429). Observed:
    every guess is checked (401 each), and the right one then changes the password."""
    account = {"username": "alice", "password": "password1"}
    async with aiohttp.ClientSession() as http:
        async with http.put(server.base + "/auth/register", json=account) as response:
            assert response.status == 201
        async with http.post(server.base + "/auth/login", json=account) as response:
            assert response.status == 202
        statuses = []
        for guess in range(8):
            update = {"password": "new-password-1", "current_password": f"guess-{guess}"}
            async with http.post(server.base + "/user/update", json=update) as response:
                statuses.append(response.status)
    print("POST /user/update with wrong current passwords:", statuses)
    assert 429 in statuses, f"8 wrong current passwords, none throttled: {statuses}"


def test_bomb_is_small() -> None:
    """The attack body of test 1 is what an anonymous client sends: ~100 KB on the wire."""
    assert len(_deflate_bomb(LIMIT + 4 * MIB)) < 200_000
