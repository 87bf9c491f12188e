"""The command line behind run.py: serve (the default), migrate, useradd, worker, convert,
job-key.

Every expected failure (bad configuration, unreachable database, refused migration, port in use)
ends the program with one line on stderr and a non-zero status, not a traceback. SIGTERM is
handled like Ctrl-C everywhere, so an embedded PostgreSQL is stopped however the program ends;
SIGHUP (its terminal closed) as SIGTERM, unless it was started with SIGHUP ignored (`nohup`).
"""

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType

import asyncpg

from server import logs, values
from server.accounts import passwords
from server.config import Config, ConfigError, DatabaseConfig
from server.config_loader import DEFAULT_CONFIG, load_config
from server.database import db
from server.editor.command import convert_command
from server.errors import BadRequest
from server.jobs.access import new_update_key
from server.processes import (
    check_host,
    check_process_count,
    one_line,
    port_held,
    run_server,
    serve_processes,
)
from server.runner import RunnerBusy
from server.store import simulations, users

# Failures a person can fix from the message alone; anything else keeps its traceback.
EXPECTED_ERRORS = (
    ConfigError,
    db.MigrationError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    subprocess.CalledProcessError,
    RunnerBusy,
)


class Stop(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def _hang_up_as_stop() -> None:
    """SIGHUP becomes a SIGTERM to the process it reaches (run.py or a forked server process),
    handled there as SIGTERM is at that moment; left ignored under `nohup`."""
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))


@contextlib.contextmanager
def database(config: Config) -> Iterator[Config]:
    """The config with a database URL: the configured one, or a started embedded server's."""
    if config.database.url:
        yield config
        return
    from server.database.embedded import embedded_postgres

    with embedded_postgres(config.data_dir) as url:
        yield config.replace("database", url=url)


def _describe_database(config: Config, embedded: bool) -> str:
    url = db.describe_url(config.database.url)
    return f"embedded PostgreSQL in {config.data_dir / 'postgres'} ({url})" if embedded else url


def serve(config: Config, args: argparse.Namespace) -> None:
    # Imported here, before server processes are forked: they start at once, sharing it.
    import server.app  # noqa: F401
    from server.eventloop import new_event_loop

    processes = args.workers or config.server.workers
    config = config.replace("server", workers=processes)
    check_process_count(config, processes)
    check_host(config)
    embedded = not config.database.url
    # The port is checked before the database is started or migrated under another server;
    # several processes hold it (they bind with SO_REUSEPORT: see port_held).
    if processes == 1:
        with port_held(config):
            pass
    with (
        port_held(config) if processes > 1 else contextlib.nullcontext(),
        database(config) as config,
    ):
        print(f"Database: {_describe_database(config, embedded)}", flush=True)
        listening = f"Listening on {config.listen_url}"
        if processes > 1:
            asyncio.run(db.prepare(config))  # once, before anything is forked (server.workers)
            serve_processes(config, processes, listening, EXPECTED_ERRORS)
        else:
            try:
                run_server(config, new_event_loop(), lambda: print(listening, flush=True))
            finally:
                # run_app restores the default SIGTERM action on exit; keep stopping cleanly.
                signal.signal(signal.SIGTERM, _raise_stop)
    print("Stopped", flush=True)  # both ways: a signal is the normal end


@contextlib.asynccontextmanager
async def _connected(settings: DatabaseConfig) -> AsyncIterator[asyncpg.Connection]:
    conn = await db.connect(settings.url, db.connect_timeout(settings))
    try:
        yield conn
    finally:
        await conn.close()


async def _migrate(settings: DatabaseConfig) -> list[str]:
    async with _connected(settings) as conn:
        return await db.migrate(conn)


def migrate(config: Config, args: argparse.Namespace) -> None:
    with database(config) as config:
        applied = asyncio.run(_migrate(config.database))
    for name in applied:
        print(f"Applied {name}")
    print("The schema is up to date")


def _read_password() -> str:
    """The password from a prompt, or from the first line of stdin; it must be UTF-8 text."""
    try:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Repeat password: ") != password:
                raise SystemExit("Passwords do not match")
            return password
        return sys.stdin.buffer.readline().decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SystemExit("Invalid password: not UTF-8 text") from None


async def _useradd(settings: DatabaseConfig, username: str, password: str) -> int | None:
    async with _connected(settings) as conn:
        await db.migrate(conn)
        return await users.create(conn, username, await passwords.hash_password(password))


def useradd(config: Config, args: argparse.Namespace) -> None:
    try:
        passwords.validate_username(args.name)
        password = passwords.validate_password(_read_password())
    except BadRequest as exc:
        raise SystemExit(exc.message) from None
    with database(config) as config:
        user_id = asyncio.run(_useradd(config.database, args.name, password))
    if user_id is None:
        raise SystemExit(f"User {args.name!r} already exists")
    print(f"Created user {args.name!r}")


async def _rotate_key(settings: DatabaseConfig, job_id: str) -> str | None:
    key, digest = new_update_key()
    async with _connected(settings) as conn:
        await db.migrate(conn)
        rotated = await simulations.rotate_update_key(conn, job_id, digest)
    return key if rotated else None


def job_key(config: Config, args: argparse.Namespace) -> None:
    """A new update key for an external dispatcher (runner.kind = "none"), printed on stdout
    only: the server keeps its digest, never the key, so the old one is replaced."""
    if config.runner.kind != "none":
        raise SystemExit(
            f'job-key needs runner.kind = "none" (it is {config.runner.kind!r}: its workers '
            "hold the key, and a new one would cut them off)"
        )
    with database(config) as config:
        key = asyncio.run(_rotate_key(config.database, args.job_id))
    if key is None:
        raise SystemExit(
            f"No unfinished direct simulation {args.job_id!r} for external workers: none has "
            "that id, it ended, or a server's own workers run it (batch, SLURM or local runner: "
            "they hold its key)"
        )
    print(key)


def _positive_int(text: str) -> int:
    if (number := values.decimal(text)) is None or number < 1:  # ASCII digits, not str.isdigit()
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="YAPTIDE simulation backend. Without a command: serve the API.",
        epilog="Configuration: config.toml, overridden by YAPTIDE_<SECTION>_<KEY> and "
        "DATABASE_URL environment variables (see README.md).",
    )
    config_help = "configuration file (default: config.toml at the top of the project)"
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="PATH", help=config_help
    )
    # Also accepted after the command; SUPPRESS keeps the main parser's value when it is absent.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=config_help
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {
        "serve": "serve the API (the default); starts the embedded PostgreSQL when no "
        "database URL is configured",
        "migrate": "apply pending database migrations and exit",
        "useradd": "create a local user; the password is read from a prompt, or from the "
        "first line of stdin when it is not a terminal",
        "worker": "run one task of a simulation (or its merge step) as told by the YAPTIDE_* "
        "environment: what the local runner and HPC batch jobs start",
        "convert": "write the SHIELD-HIT12A input files of an editor project (the project JSON, "
        "or a submission holding it as input_json) into a directory",
        "job-key": "print a new update key for an unfinished direct simulation (the old one stops "
        "working), for an external dispatcher with runner.kind = none",
    }
    parsers = {
        name: commands.add_parser(name, parents=[config], help=text, description=text)
        for name, text in helps.items()
    }
    processes_help = "number of server processes sharing the port (default: server.workers)"
    for target in (parser, parsers["serve"]):
        target.add_argument(
            "--workers",
            type=_positive_int,
            default=argparse.SUPPRESS,
            metavar="N",
            help=processes_help,
        )
    parser.set_defaults(workers=None)
    add = parsers["useradd"]
    add.add_argument("name", help="the username")
    parsers["worker"].add_argument("step", nargs="?", default="task", choices=("task", "merge"))
    convert = parsers["convert"]
    convert.add_argument("project", type=Path, help="the project JSON file")
    convert.add_argument("outdir", type=Path, help="where to write the files (made if missing)")
    convert.add_argument(
        "--primaries",
        type=_positive_int,
        metavar="N",
        help="primaries (NSTAT) written into beam.dat (default: the project's "
        "beam.numberOfParticles)",
    )
    parsers["job-key"].add_argument("job_id", help="the simulation's job_id")
    return parser


COMMANDS: dict[str | None, Callable[[Config, argparse.Namespace], None]] = {
    None: serve,
    "serve": serve,
    "migrate": migrate,
    "useradd": useradd,
    "convert": convert_command,
    "job-key": job_key,
}


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.command not in (None, "serve"):
        parser.error(f"--workers is for serving, not for {args.command}")
    if args.command == "worker":  # it reads only its environment (YAPTIDE_*), not config.toml
        from server.worker.main import main as run_worker

        raise SystemExit(run_worker([args.step]))
    signal.signal(signal.SIGTERM, _raise_stop)
    _hang_up_as_stop()
    logs.configure()
    command = COMMANDS[args.command]
    try:
        command(load_config(args.config), args)
    except EXPECTED_ERRORS as exc:
        raise SystemExit(one_line(exc)) from None
    except KeyboardInterrupt:
        # Stopping the server by signal is its normal end; elsewhere it is an interruption.
        if command is not serve:
            raise SystemExit(130) from None
