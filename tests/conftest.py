"""Test session: one real PostgreSQL (embedded, or DATABASE_URL), real migrations, truncation
between tests, and a fresh app per test."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import db
from server.app import create_app
from server.config import Config
from server.keys import CONFIG
from server.serving import handler_settings
from tests.helpers import server_tmp_dir, worker_setup


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        asyncio.run(_migrate(url))
        yield url
        return
    from server.embedded import embedded_postgres

    with server_tmp_dir() as directory, embedded_postgres(directory) as url:
        asyncio.run(_migrate(url))
        yield url


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database, emptied before the test, for checking what is stored."""
    connection = await asyncpg.connect(database_url)
    await connection.execute("TRUNCATE users RESTART IDENTITY CASCADE")
    yield connection
    await connection.close()


@pytest.fixture
def aiohttp_server(aiohttp_server: Callable) -> Callable:
    """pytest-aiohttp's server factory, serving apps with run.py's own connection settings."""

    async def start(app: web.Application, **kwargs: Any) -> TestServer:
        settings = handler_settings(app[CONFIG]) if CONFIG in app else {}
        return await aiohttp_server(app, **{**settings, **kwargs})

    return start


@pytest.fixture
def aiohttp_client(aiohttp_client: Callable, aiohttp_server: Callable) -> Callable:
    """pytest-aiohttp's client factory; an app is served by the aiohttp_server above."""

    async def start(target: Any, **kwargs: Any) -> TestClient:
        if isinstance(target, web.Application):
            target = await aiohttp_server(target)
        return await aiohttp_client(target, **kwargs)

    return start


@pytest.fixture
def make_config(database_url: str, tmp_path: Path) -> Callable[..., Config]:
    """Config for a test app: the test database, a private data dir, no runner unless asked.

    Keyword arguments are sections: make_config(auth={"access_ttl": 1}).
    """

    def make(**sections: dict[str, Any]) -> Config:
        config = Config().replace("database", url=database_url, data_dir=str(tmp_path / "data"))
        config = config.replace("runner", kind="none")
        for section, values in sections.items():
            config = config.replace(section, **values)
        return config

    return make


@pytest.fixture
async def client(
    aiohttp_client: Callable, make_config: Callable[..., Config], conn: asyncpg.Connection
) -> TestClient:
    return await aiohttp_client(create_app(make_config()))


@pytest.fixture
async def worker(aiohttp_client: Callable, make_config: Callable[..., Config], conn) -> tuple:
    """(client, recorder, identity): a 4-task job and its worker identity; see worker_setup."""
    return await worker_setup(aiohttp_client, make_config)


def with_database(url: str, name: str) -> str:
    """`url` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """The URL of an empty database made on the test server for this test, dropped after it."""
    name = f"scratch_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(database_url, f'CREATE DATABASE "{name}"'))
    yield with_database(database_url, name)
    asyncio.run(_admin(database_url, f'DROP DATABASE "{name}" WITH (FORCE)'))
