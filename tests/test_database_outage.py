"""The database going away under a running server: PostgreSQL stopped (restart, crash, upgrade),
then started again. Clients get a JSON 503 to retry, never a 500, and the server carries on by
itself once it is back. The test runs a PostgreSQL of its own, which it stops and starts."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from server.app import create_app
from server.embedded import embedded_postgres, pgserver
from tests.helpers import login, payload, server_tmp_dir, submit

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
    """(URL, data directory) of a PostgreSQL of this test's own."""
    with server_tmp_dir() as directory, embedded_postgres(directory) as url:
        yield url, directory / "postgres"


async def test_a_stopped_database_is_a_503_and_its_return_is_seen(
    aiohttp_client, make_config, own_database
):
    url, pgdata = own_database
    client = await aiohttp_client(create_app(make_config(database={"url": url})))
    await login(client)
    job_id = await submit(client, payload())
    options = f'-h "" -k {parse_qs(urlsplit(url).query)["host"][0]}'  # its socket, as started
    await asyncio.to_thread(pg_ctl, pgdata, "stop", "-m", "fast")
    try:
        for method, path in ROUTES:
            body = {"username": "alice", "password": "password1"} if "login" in path else None
            response = await client.request(
                method,
                path.format(job_id=job_id),
                json=payload() if path == "/jobs/direct" else body,
            )
            answer = (response.status, await response.json(), "Retry-After" in response.headers)
            assert answer == (503, {"message": "Database unavailable"}, True), (method, path)
    finally:
        await asyncio.to_thread(
            pg_ctl, pgdata, "start", "-w", "-l", str(pgdata / "log"), "-o", options
        )
    response = await client.get("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    response = await client.post("/auth/login", json={"username": "alice", "password": "password1"})
    assert response.status == 202
