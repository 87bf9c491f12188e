"""Database access: the connection pool as an app resource, and the migrations runner.

Migrations are forward-only files `sql/migrations/NNNN_name.sql`, applied in order under an
advisory lock (so several server processes starting at once apply each file exactly once), one
transaction per file, and recorded with a SHA-256 of their text. A file changed after it was
applied is refused: schema history must not be rewritten under a running database.
"""

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiohttp import web

from server.config import Config
from server.keys import CONFIG, POOL
from server.sql import SQL_DIR, query

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x79617074  # "yapt": one advisory lock id for the migration runner


class MigrationError(Exception):
    """The migration files and the database disagree; the server must not start."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return migrations


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names of those applied now."""
    migrations = read_migrations(directory)
    await conn.execute(query("advisory_lock"), _LOCK_ID)
    try:
        await conn.execute(query("create_migrations_table"))
        applied = {r["version"]: r for r in await conn.fetch(query("list_migrations"))}
        done = []
        for migration in migrations:
            record = applied.get(migration.version)
            if record is not None:
                if record["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied "
                        f"(applied as {record['name']}); migrations are forward-only: "
                        "restore the file and add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    query("record_migration"),
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %s", migration.name)
            done.append(migration.name)
        return done
    finally:
        await conn.execute(query("advisory_unlock"), _LOCK_ID)


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections are not reset: no code sets session state (SET, LISTEN, session
    advisory locks), so asyncpg's default reset would only cost a round trip per request."""


async def create_pool(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min(2, size), max_size=size, reset=_keep_session)


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the pool, bring the schema up to date, close the pool on shutdown."""
    config: Config = app[CONFIG]
    pool = await create_pool(config.database.url, config.database.pool_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    app[POOL] = pool
    yield
    await pool.close()


def describe_url(url: str) -> str:
    """The database URL without its password, for logs."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)
