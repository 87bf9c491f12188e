"""Test session: one real PostgreSQL (embedded, or DATABASE_URL), real migrations, truncation
between tests, and a fresh app per test."""

import asyncio
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from server.accounts import passwords
from server.app import create_app
from server.config import ClusterConfig, Config
from server.eventloop import new_event_loop
from server.keys import CONFIG
from server.limits.serving import handler_settings
from tests.fakes.openid_provider import (
    BACKEND,
    REALM_PATH,
    REFETCH_INTERVAL,
    OpenIdProvider,
    SigningKey,
    make_key,
)
from tests.fakes.simulators import write_fake
from tests.helpers import migrated, server_tmp_dir, start_local, start_worker_app, worker_setup

SEED_CLUSTER = ClusterConfig("prometheus", "Prometheus (Cyfronet)", True)  # the user seed's


def _print_tasks(signum: int, frame: object) -> None:
    """SIGUSR1: every task of the running event loop with its stack, on stderr (a test that
    hangs waits on a task: faulthandler shows only the loop waiting)."""
    loop = asyncio._get_running_loop()
    for task in asyncio.all_tasks(loop) if loop is not None else ():
        task.print_stack(file=sys.stderr)


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGUSR1, _print_tasks)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the event loop the server runs on (uvloop where installed)."""
    return {"server": new_event_loop}


@pytest.fixture(autouse=True, scope="session")
def no_proxy_of_the_machine() -> Iterator[None]:
    """The tests' servers are on loopback: a proxy the machine's environment names (which the
    server's Keycloak client follows) is not for them; a test sets its own."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def bwrap() -> str:
    """bubblewrap for the tests of the workers' sandbox: installed with apt-get when missing and
    this is root (as CI is, like the SLURM tests' packages), else those tests are skipped."""
    if shutil.which("bwrap") is None and os.geteuid() == 0:
        subprocess.run([str(Path(__file__).with_name("install-bwrap.sh"))], check=True)
    found = shutil.which("bwrap")
    if found is None:
        pytest.skip("bwrap (Debian package bubblewrap) is missing; install it as root")
    return found


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        asyncio.run(migrated(url))
        yield url
        return
    from server.database.embedded import embedded_postgres

    with server_tmp_dir() as directory, embedded_postgres(directory) as url:
        asyncio.run(migrated(url))
        yield url


# argon2id with the least work it allows, in the test process, where most tests register and log
# in: ~1 ms a hash or check instead of ~0.16 s (64 MiB, 3 passes, 4 lanes). Servers the tests
# start as processes hash as in production, and so do tests marked production_hashes.
LIGHT_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
LIGHT_DUMMY_HASH = LIGHT_HASHER.hash("not a real password")


@pytest.fixture(autouse=True)
def light_password_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("production_hashes") is None:
        monkeypatch.setattr(passwords, "_hasher", LIGHT_HASHER)
        monkeypatch.setattr(passwords, "_DUMMY_HASH", LIGHT_DUMMY_HASH)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database, emptied before the test, for checking what is stored."""
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        "TRUNCATE users, login_attempts, pending_scancels RESTART IDENTITY CASCADE"
    )
    yield connection
    await connection.close()


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[Callable]:
    """A server factory like pytest-aiohttp's, serving apps as run.py does: with its connection
    settings, and handlers that run on when their client goes away (ProductionServer)."""
    servers: list[TestServer] = []

    async def start(app: web.Application, *, port: int | None = None, **kwargs: Any) -> TestServer:
        settings = handler_settings(app[CONFIG]) if CONFIG in app else {}
        server = ProductionServer(app, port=port)
        await server.start_server(**{**settings, **kwargs})
        servers.append(server)
        return server

    yield start
    while servers:
        await servers.pop().close()


class ProductionServer(TestServer):
    """aiohttp's TestServer cancels a handler whose client disconnects; web.run_app (run.py)
    does not, and the tests must check what runs."""

    async def _make_runner(self, handler_cancellation: bool = False, **kwargs: Any) -> Any:
        return await super()._make_runner(**kwargs)


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
        # Workers as plain processes (their pids are this host's): test_runner_sandbox.py's not.
        config = config.replace("runner", kind="none", sandbox="off")
        for section, values in sections.items():
            config = config.replace(section, **values)
        return config

    return make


@pytest.fixture
def no_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without sbatch, squeue or scancel: nothing reaches a real SLURM."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


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


@pytest.fixture(scope="session")
def realm_keys() -> dict[str, SigningKey]:  # RSA keys take a moment to make: once a session
    """The realm's RSA and EC keys, a second RSA key for rotation, and two that are not the
    realm's: one under an unpublished key id, one under the id of the realm's RSA key."""
    return {
        "rsa": make_key("rsa-1", "RS256"),
        "ec": make_key("ec-1", "ES256"),
        "rsa_next": make_key("rsa-2", "RS256"),
        "unpublished": make_key("rsa-unpublished", "RS256"),
        "impostor": make_key("rsa-1", "RS256"),
    }


@pytest.fixture
async def provider(
    aiohttp_server: Callable, realm_keys: dict[str, SigningKey]
) -> AsyncIterator[OpenIdProvider]:
    """A Keycloak realm of the test's own on a loopback port, publishing the RSA and EC keys."""
    realm = OpenIdProvider([realm_keys["rsa"], realm_keys["ec"]])
    server = await aiohttp_server(realm.app())
    realm.issuer = str(server.make_url(REALM_PATH))
    yield realm
    realm.release.set()  # let stalled requests finish, so the server can stop


@pytest.fixture
def sso_config(make_config: Callable[..., Config], provider: OpenIdProvider) -> Callable:
    """Config of an app that accepts the test realm's tokens (keycloak keys changed by kwargs)."""

    def make(**keycloak: Any) -> Config:
        settings = {
            "issuer": provider.issuer,
            "client_ids": BACKEND,
            "min_refetch_interval": REFETCH_INTERVAL,
            **keycloak,
        }
        return dataclasses.replace(make_config(keycloak=settings), clusters=(SEED_CLUSTER,))

    return make


@pytest.fixture
async def sso(
    aiohttp_client: Callable, sso_config: Callable, conn: asyncpg.Connection
) -> TestClient:
    """A client of an app that accepts the test realm's tokens and offers the seed's cluster."""
    return await aiohttp_client(create_app(sso_config()))


@pytest.fixture
def app_makers(
    aiohttp_server: Callable,
    aiohttp_client: Callable,
    unused_tcp_port_factory: Callable[[], int],
    make_config: Callable[..., Config],
    conn: asyncpg.Connection,
) -> tuple[Callable, Callable, Callable[[], int], Callable[..., Config]]:
    """What an app with a local runner is started with (the database emptied first: conn)."""
    return aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config


@pytest.fixture
def start_app(app_makers: tuple) -> Callable:
    """start_app(mode, user="alice", **runner) -> (client, recorder, config): an app whose local
    runner runs the fake worker in `mode` (tests/helpers.py start_local)."""
    return functools.partial(start_local, *app_makers)


@pytest.fixture
def start_worker(app_makers: tuple) -> Callable:
    """start_worker(simulators, middleware=None, **runner) -> (client, recorder, config): an app
    whose local runner runs the built-in worker (tests/helpers.py start_worker_app)."""
    server, client, ports, make_config = app_makers

    async def start(*args: Any, **kwargs: Any) -> tuple:
        return await start_worker_app(server, client, ports(), make_config, *args, **kwargs)

    return start


@pytest.fixture
def fake(tmp_path: Path) -> Callable[..., Path]:
    """fake(files, **options) -> the path of a fake shieldhit (tests/fakes/simulators.py
    write_fake)."""
    return functools.partial(write_fake, tmp_path / "shieldhit", "shieldhit")
