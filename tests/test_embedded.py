"""The embedded PostgreSQL is this server's alone: no other account of the host can connect."""

import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from server.embedded import embedded_postgres, pgserver
from tests.helpers import server_tmp_dir

PSQL = Path(pgserver.postgres_server.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]) / "psql"


async def test_another_account_cannot_connect_to_the_embedded_database() -> None:
    """A data_dir too long for a Unix socket inside it makes pgserver put the socket in a shared
    directory (mode 0777) with trust authentication: any account of the host connected as the
    superuser. The socket is now the server's account's alone."""
    with server_tmp_dir() as directory:
        data = directory / ("d" * 80)
        with embedded_postgres(data) as url:
            socket_dir = parse_qs(urlsplit(url).query)["host"][0]
            assert not socket_dir.startswith(str(data))  # the shared fallback directory
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
