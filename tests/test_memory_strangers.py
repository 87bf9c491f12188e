"""A server's memory under hostile request bodies, as the kernel counts it: a real `run.py`,
its resident memory (VmRSS) read between requests."""

import signal
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.servers import free_port, rss_mib, start, wait_ready

MIB = 1 << 20
LIMIT = 32 * MIB  # server.max_body_size and worker_max_body_size
BUDGET = 64 * MIB  # server.body_budget


@pytest.fixture
async def server(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[tuple[str, int]]:
    """(base URL, pid) of a run.py with small body limits."""
    port = free_port()
    limits = {"MAX_BODY_SIZE": LIMIT, "WORKER_MAX_BODY_SIZE": LIMIT, "BODY_BUDGET": BUDGET}
    env = {f"YAPTIDE_SERVER_{name}": str(value) for name, value in limits.items()}
    process = start(database_url, tmp_path / "data", port, **env)
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base, process)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def deflate_bomb(inflated: int) -> bytes:
    """A worker body of ~`inflated` bytes whose update key is nobody's, deflated (~0.1 %)."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b'{"simulation_id":"x","update_key":"nobody","logfiles":{"a":"')]
    parts += [packer.compress(b"a" * MIB) for _ in range(inflated // MIB)]
    return b"".join([*parts, packer.compress(b'"}}'), packer.flush()])


async def test_bodies_refused_as_too_large_leave_no_memory_behind(server) -> None:
    """Anyone's deflate bombs to POST /logfiles, one after the other, each refused with 413
    once LIMIT bytes are inflated. Each body is dropped with its request. Before the fix the
    413, built before the read, formed a reference cycle with the frame holding the body: each
    refused body stayed until a full garbage collection (RSS up ~LIMIT a request, 233 MiB
    above the start over 12 of them here; 3 GB after 11 1 GiB bombs at the default limits)."""
    base, pid = server
    bomb = deflate_bomb(LIMIT + 4 * MIB)
    assert len(bomb) < 100_000
    headers = {"Content-Type": "application/json", "Content-Encoding": "deflate"}
    refused = {"message": f"Request body larger than {LIMIT} bytes"}
    async with aiohttp.ClientSession() as http:
        before = peak = rss_mib(pid)
        for _ in range(12):
            async with http.post(f"{base}/logfiles", data=bomb, headers=headers) as response:
                assert (response.status, await response.json()) == (413, refused)
            peak = max(peak, rss_mib(pid))
    # One body is read at a time: at most one LIMIT buffer, and the allocator's slack.
    assert peak - before <= (LIMIT + 16 * MIB) / MIB, f"RSS grew by {peak - before:.0f} MiB"
