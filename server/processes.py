"""Several server processes on one port (SO_REUSEPORT), sharing the database.

The parent starts the database (when embedded), settles the signing secret so that every
process signs with the same one, forks the servers and waits; SIGTERM or Ctrl-C is passed on
to them, and the database stops only after all of them have ended.
"""

import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Sequence

from aiohttp import web

from server.auth import load_secret
from server.config import Config, ConfigError

STOP_TIMEOUT = 30.0


def check_process_count(config: Config, count: int) -> None:
    """More than one server process needs a dispatcher that does not live in one of them."""
    if count > 1 and config.runner.kind == "local":
        raise ConfigError(
            'server.workers: more than one server process needs runner.kind = "slurm" or "none" '
            "(the local runner keeps each job's update key and processes in one server process)"
        )


def _serve_one(config: Config) -> None:
    from server.app import create_app
    from server.limits.serving import handler_settings

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_app installs its own handlers
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        reuse_port=True,
        print=None,
        access_log=None,
        **handler_settings(config),
    )


def _wait_listening(
    config: Config, processes: Sequence[multiprocessing.process.BaseProcess], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.is_alive() for p in processes):
        try:
            with socket.create_connection((config.server.host, config.server.port), 0.5):
                return
        except OSError:
            time.sleep(0.05)


def serve_processes(config: Config, count: int, listening: str) -> None:
    """Run `count` server processes until a signal; ends them all before returning."""
    # Ctrl-C stops them even if this process was started with SIGINT ignored (a background job
    # of a non-interactive shell), as it stops one server process (aiohttp handles SIGINT itself).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = config.replace("auth", secret=load_secret(config))
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_serve_one, args=(config,)) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        _wait_listening(config, processes)
        print(f"{listening} ({count} processes)", flush=True)
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
