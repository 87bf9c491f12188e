"""The embedded PostgreSQL is this server's alone: no other account of the host can connect.
It is started again when it stops under the server (a full disk)."""

import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from server.app import create_app
from server.database.embedded import embedded_postgres, pgserver
from tests.helpers import eventually, fill, login, server_tmp_dir, small_filesystem

PSQL = Path(pgserver.postgres_server.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]) / "psql"


async def test_another_account_cannot_connect_to_the_embedded_database() -> None:
    """pgserver trusts every local connection: the socket is the server's account's alone, in
    the database's directory (a data_dir too long for that is refused:
    tests/test_embedded_start.py; pgserver put the socket in a shared directory, mode 0777)."""
    with server_tmp_dir() as directory:
        data = directory / "data"
        with embedded_postgres(data) as url:
            socket_dir = parse_qs(urlsplit(url).query)["host"][0]
            assert Path(socket_dir) == (data / "postgres").resolve()
            socket = Path(socket_dir) / ".s.PGSQL.5432"
            assert stat.S_IMODE(socket.stat().st_mode) == 0o700
            if os.geteuid() == 0:
                argv = ["runuser", "-u", "nobody", "--", str(PSQL), "-h", socket_dir]
                result = subprocess.run(
                    [*argv, "-U", "postgres", "-c", "SELECT 1", "postgres"],
                    capture_output=True,
                    text=True,
                )
                assert result.returncode != 0 and "Permission denied" in result.stderr
            connection = await asyncpg.connect(url)  # the server's own account still can
            assert await connection.fetchval("SELECT 1") == 1
            await connection.close()


async def _status(client) -> int | None:
    response = await client.get("/auth/status")
    return response.status if response.status != 503 else None


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_the_embedded_database_is_back_once_its_full_disk_has_room(
    aiohttp_client, make_config
) -> None:
    """PostgreSQL that must start a WAL file on a full disk PANICs, and its crash recovery, which
    cannot write either, shuts it down. Nothing started it again: the server answered 503 for
    ever, also after space was freed."""
    with small_filesystem("200m") as directory, embedded_postgres(directory) as url:
        client = await aiohttp_client(create_app(make_config(database={"url": url})))
        await login(client)
        filler = fill(directory)
        conn = await asyncpg.connect(url)
        await conn.fetchval("SELECT pg_switch_wal()")  # the next write needs a new WAL file
        response = await client.put("/auth/register", json={"username": "bob", "password": "x" * 8})
        assert (response.status, await response.json()) == (
            503,
            {"message": "Database unavailable"},
        )
        conn.terminate()  # its server is gone
        await eventually(lambda: _shut_down(directory / "postgres"))
        filler.unlink()
        assert await eventually(lambda: _status(client), timeout=60) == 200


async def _shut_down(pgdata: Path) -> bool:
    return "database system is shut down" in (pgdata / "log").read_text().split("PANIC")[-1]
