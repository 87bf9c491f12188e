"""PostgreSQL out of disk space under a running server (its data directory on a small file
system that fills up): a write it cannot store is a JSON error to retry, with one log line and
nothing stored, and the same write succeeds once space is freed. The tests run a PostgreSQL of
their own on a tmpfs (root only: mount)."""

import io
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from server.app import create_app
from server.database.embedded import embedded_postgres
from tests.helpers import KEY, RESULTS, fill, login, payload, set_key, small_filesystem, submit

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def database_on_a_small_disk() -> Iterator[tuple[str, Path]]:
    """(URL, mount point) of a PostgreSQL of this test's own, its data on a 200 MiB tmpfs."""
    with small_filesystem("200m") as directory, embedded_postgres(directory) as url:
        yield url, directory


def results_body(job_id: str) -> bytes:
    return orjson.dumps({"simulation_id": job_id, "update_key": KEY, **RESULTS})


async def stored(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        tables = ("simulations", "inputs", "estimators", "pages", "logfiles")
        return [await conn.fetchval(f"SELECT count(*) FROM {table}") for table in tables]
    finally:
        await conn.close()


async def test_a_database_out_of_disk_space_is_a_json_error_to_retry(
    aiohttp_client, make_config, database_on_a_small_disk, caplog
):
    url, directory = database_on_a_small_disk
    client = await aiohttp_client(create_app(make_config(database={"url": url})))
    await login(client)
    job_id = await submit(client, payload())
    conn = await asyncpg.connect(url)
    await set_key(conn, job_id)
    await conn.close()
    files = {"beam.dat": "NSTAT 100\n", "big.dat": os.urandom(100_000).hex()}  # no compression
    logfiles = {"simulation_id": job_id, "update_key": KEY, "logfiles": {"log": files["big.dat"]}}
    filler = fill(directory)
    answers = [
        await client.post("/jobs/direct", json=payload(input_files=files)),
        await client.post("/results", data=io.BytesIO(results_body(job_id))),
        await client.post("/logfiles", json=logfiles),
    ]
    seen = [(r.status, await r.json(), r.headers.get("Retry-After")) for r in answers]
    assert seen == [(503, {"message": "Database out of disk space"}, "10")] * 3
    assert await stored(url) == [1, 1, 0, 0, 0]
    assert "Traceback" not in caplog.text
    assert caplog.text.count("database out of disk space") == 3
    filler.unlink()
    response = await client.post("/jobs/direct", json=payload(input_files=files))
    assert response.status == 202
    response = await client.post("/results", data=io.BytesIO(results_body(job_id)))
    assert response.status == 202
