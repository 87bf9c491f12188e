"""The local runner while PostgreSQL is out of disk space: a task whose worker dies then is
still recorded FAILED once space is freed, never left RUNNING for ever. The test runs a
PostgreSQL of its own on a tmpfs (root only: mount)."""

import asyncio
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from server.database.embedded import embedded_postgres
from tests.helpers import (
    eventually,
    fill,
    job_dir_of,
    pids_of,
    small_filesystem,
    start_local,
    states_are,
    submit,
    wait_gone,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def database_on_a_small_disk() -> Iterator[tuple[str, Path]]:
    """(URL, mount point) of a PostgreSQL of this test's own, its data on a 200 MiB tmpfs."""
    with small_filesystem("200m") as directory, embedded_postgres(directory) as url:
        yield url, directory


async def test_a_worker_dying_while_the_database_is_full_still_fails_its_task(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, database_on_a_small_disk
):
    """Its FAILED and its log were one write that PostgreSQL refused (no disk space): it was
    logged as a runner failure and dropped, and the task stayed RUNNING after space was freed
    (its job could not be deleted: 409 while running)."""
    url, directory = database_on_a_small_disk
    ports, config_of = unused_tcp_port_factory, partial(make_config, database={"url": url})
    client, _, config = await start_local(aiohttp_server, aiohttp_client, ports, config_of, "hang")
    job_id = await submit(client, ntasks=1)
    await eventually(states_are(client, job_id, "RUNNING", "RUNNING"))
    filler = fill(directory)
    pids = pids_of(job_dir_of(config, job_id), range(1, 2))
    os.killpg(pids[0], signal.SIGKILL)
    await wait_gone(pids)
    await asyncio.sleep(1)  # the runner's write is refused meanwhile
    filler.unlink()
    body = await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=20)
    assert body["job_tasks_status"][0]["task_state"] == "FAILED"
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT name FROM logfiles") == "task_1_output"
    await conn.close()
