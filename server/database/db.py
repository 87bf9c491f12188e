"""Database access: the connection pool as an app resource, and the migrations runner.

Migrations are forward-only files `sql/migrations/NNNN_name.sql`, applied in order under an
advisory lock (so several server processes starting at once apply each file exactly once), one
transaction per file, and recorded with a SHA-256 of their text. A file changed after it was
applied is refused: schema history must not be rewritten under a running database.
"""

import contextlib
import hashlib
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from server.config import Config, ConfigError, DatabaseConfig
from server.database.sql import SQL_DIR, query
from server.keys import CONFIG, POOL
from server.models import Conn

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x79617074  # "yapt": one advisory lock id for the migration runner
_CONNECT_TIMEOUT = 60.0  # asyncpg's own default, when statements may wait for ever
_FORWARD_ONLY = "migrations are forward-only: restore the file and add a new migration instead"


class MigrationError(Exception):
    """The migration files and the database disagree; the server must not start."""


class DatabaseUnreachable(ConnectionError):
    """No new connection could be opened: PostgreSQL is stopped, restarting or out of reach, or
    has none left (max_connections, shared with the other servers and clients of the database)."""


# What a request meets while PostgreSQL is away: no new connection, or the one it had broken
# (closed under it, terminated by a shutdown or restart): a 503 to retry, nothing was written.
# Or no answer for database.command_timeout (a frozen server, a cut with no reset): asyncpg
# raises the builtin TimeoutError, the one a request handler can meet (every other wait in a
# request handles its own timeout). InternalClientError: a connection broken mid-protocol.
UNAVAILABLE = (
    DatabaseUnreachable,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)

# PostgreSQL out of disk space: the statement was rolled back (nothing written) and the same
# write succeeds once an operator frees space; a 503 to retry, not a 500 with a traceback.
DISK_FULL = asyncpg.exceptions.DiskFullError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        # Of the text as read (universal newlines), so a CRLF checkout does not look like an edit.
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory` in order; a badly named or duplicated file is refused."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no such directory")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: bad migration file name (expected NNNN_lowercase_name.sql)"
            )
        sql = path.read_text(encoding="utf-8")
        migrations.append(Migration(int(match.group(1)), path.name, sql))
    by_version: dict[int, str] = {}
    for migration in migrations:
        if migration.version in by_version:
            raise MigrationError(
                f"{by_version[migration.version]} and {migration.name} share the number "
                f"{migration.version:04d}"
            )
        by_version[migration.version] = migration.name
    return migrations


def _pending(migrations: list[Migration], applied: dict[int, asyncpg.Record]) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones were not changed."""
    files = {migration.version: migration for migration in migrations}
    for version, record in applied.items():
        migration = files.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {record['name']} is applied in the database but its file is missing "
                "(is this an older version of the server?)"
            )
        if migration.name != record["name"]:
            raise MigrationError(
                f"migration {record['name']} was renamed to {migration.name} after it was "
                f"applied; {_FORWARD_ONLY}"
            )
        if migration.checksum != record["checksum"]:
            raise MigrationError(
                f"migration {migration.name} was edited after it was applied; {_FORWARD_ONLY}"
            )
    latest = max(applied, default=0)
    pending = [migration for migration in migrations if migration.version not in applied]
    for migration in pending:
        if migration.version < latest:
            raise MigrationError(
                f"migration {migration.name} is numbered before {applied[latest]['name']}, which "
                f"is already applied; renumber it after {latest:04d}"
            )
    return pending


async def _apply(conn: Conn, migration: Migration) -> None:
    """Run one file and record it in one transaction: it is applied entirely or not at all."""
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                query("record_migration"), migration.version, migration.name, migration.checksum
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"migration {migration.name} failed and was rolled back: {exc}"
        ) from exc
    log.info("applied migration %s", migration.name)


async def migrate(conn: Conn, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names of those applied now."""
    migrations = read_migrations(directory)
    # Session-level lock: a second runner waits here, then finds nothing left to apply.
    await conn.execute(query("advisory_lock"), _LOCK_ID)
    try:
        await conn.execute(query("create_migrations_table"))
        applied = {r["version"]: r for r in await conn.fetch(query("list_migrations"))}
        pending = _pending(migrations, applied)
        if pending and applied:  # data to migrate: a database just restored has no statistics,
            await conn.execute(query("analyze"))  # and a backfill planned without is quadratic
        for migration in pending:
            await _apply(conn, migration)
        return [migration.name for migration in pending]
    finally:
        await conn.execute(query("advisory_unlock"), _LOCK_ID)


@contextlib.contextmanager
def _readable_url() -> Iterator[None]:
    """A database URL asyncpg cannot read is a configuration error: for some (a port that is not
    a number, an unclosed IPv6 bracket) it raises a bare ValueError. Its text names no password."""
    try:
        yield
    except ValueError:
        # Not its text: asyncpg quotes the piece it could not read, which may be part of a
        # password holding an unencoded "/", "?" or "#".
        raise ConfigError(
            "database.url: cannot be read (is the port a number, every '[' closed, every "
            "parameter's value one PostgreSQL knows (sslmode), and are '@', ':', '/', '?' and "
            "'#' in the user name and password percent-encoded?)"
        ) from None


async def connect(url: str, timeout: float = _CONNECT_TIMEOUT) -> asyncpg.Connection:
    """A connection of its own (migrations, locks, the CLI): DatabaseUnreachable as the pool's."""
    with _readable_url():
        return await _pool_connect(url, timeout=timeout)


def connect_timeout(settings: DatabaseConfig) -> float:
    """Seconds an unanswered connection attempt waits: `database.command_timeout`, if set."""
    return settings.command_timeout or _CONNECT_TIMEOUT


async def _keep_session(conn: Conn) -> None:
    """Released connections are not reset: no code sets session state (SET, LISTEN, session
    advisory locks), so asyncpg's default reset would only cost a round trip per request."""


async def _learn_types(conn: Conn) -> None:
    """A new pool connection learns the array types of the queries before its first request
    (4 ms of a fresh server's first result fetch went to looking them up one by one)."""
    await conn.fetchrow(query("array_types"))


async def _pool_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect for the pool; a connection that cannot be opened is DatabaseUnreachable,
    not one of the OSErrors that say nothing of the database (FileNotFoundError: its socket),
    nor a 500 when PostgreSQL has no connection left."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except TimeoutError as exc:  # no text of its own
        raise DatabaseUnreachable(
            f"cannot reach the database: no answer within {kwargs['timeout']:g} s"
        ) from exc
    except OSError as exc:
        raise DatabaseUnreachable(
            f"cannot reach the database: {exc or type(exc).__name__}"
        ) from exc
    except asyncpg.TooManyConnectionsError as exc:
        raise DatabaseUnreachable(
            f"no connection left in the database ({exc}): the pools of every server of the "
            "database and its other clients need more than max_connections"
        ) from exc


async def create_pool(settings: DatabaseConfig) -> asyncpg.Pool:
    """The pool of request connections. A statement unanswered for `command_timeout` seconds
    raises TimeoutError; asyncpg then cancels it, within the same time or by dropping the
    connection, so that a frozen PostgreSQL cannot keep the pool's connections for ever."""
    limit = settings.command_timeout or None
    with _readable_url():
        return await asyncpg.create_pool(
            settings.url,
            min_size=min(2, settings.pool_size),
            max_size=settings.pool_size,
            reset=_keep_session,
            init=_learn_types,
            connect=_pool_connect,
            command_timeout=limit,
            timeout=connect_timeout(settings),
        )


async def prepare(config: Config) -> None:
    """Bring the schema up to date (on a connection of its own: a migration may take longer
    than a request's statement may) and check that the pools fit in max_connections."""
    conn = await connect(config.database.url, connect_timeout(config.database))
    try:
        await migrate(conn)
        await check_connection_limit(conn, config)
    finally:
        await conn.close()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Prepare the database, open the pool, close it on shutdown."""
    config: Config = app[CONFIG]
    await prepare(config)
    pool = await create_pool(config.database)
    try:
        app[POOL] = pool
        yield
    finally:
        await pool.close()


async def check_connection_limit(conn: Conn, config: Config) -> None:
    """ConfigError when the server processes could together ask for more connections (each its
    pool, its change listener and its SLURM reconciler's lock, the local runner its lock) than
    PostgreSQL gives: requests would fail under load."""
    processes, pool_size = config.server.workers, config.database.pool_size
    own = 1 + (config.runner.kind == "slurm" or bool(config.clusters))  # listener, reconciler
    needed = processes * (pool_size + own) + (config.runner.kind == "local")
    limit = await conn.fetchval(query("connection_limit"))
    if needed > limit:
        raise ConfigError(
            f"database.pool_size: {processes} server process(es) with pools of {pool_size} "
            f"connections need {needed} in all, more than the {limit} PostgreSQL gives "
            "(max_connections): lower database.pool_size or server.workers, or raise "
            "max_connections"
        )


def describe_url(url: str) -> str:
    """The database URL without its passwords (in the user part, or a query parameter such as
    `password=` or `sslpassword=`), for output. The user part ends at the last "@": an
    unencoded password may hold "@", "/", "?" or "#"."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, rest = rest.rpartition("@")
    user = re.split(r"[:/?#]", userinfo, maxsplit=1)[0]
    hidden = ":***" if userinfo != user else ""
    location, mark, parameters = rest.partition("?")
    if mark:
        rest = location + mark + "&".join(map(_hidden_parameter, parameters.split("&")))
    return f"{scheme}://{user}{hidden}@{rest}" if at else f"{scheme}://{rest}"


def _hidden_parameter(parameter: str) -> str:
    """A URL query parameter, its value hidden when it is a password: asyncpg reads names
    percent-decoded (`pass%77ord` is `password`) and takes the SSL key's from `sslpassword`."""
    name, equals, _ = parameter.partition("=")
    secret = equals and urllib.parse.unquote_plus(name).lower().endswith("password")
    return f"{name}=***" if secret else parameter
