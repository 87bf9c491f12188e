"""Every module of the server imports on its own, first in a fresh interpreter: a script, a
worker or a test that starts from any one of them works, whatever was imported before."""

import pkgutil
import subprocess
import sys

import server

# Each module is imported in a child forked from a parent that holds only the libraries, so that
# what a module needs of the server is loaded from it alone (and the check takes seconds).
CHECK = """
import importlib, os, sys
import aiohttp.web, asyncpg, orjson, jwt  # the heavy libraries, imported once
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_every_server_module_imports_first_and_alone() -> None:
    names = [
        module.name
        for module in pkgutil.walk_packages(server.__path__, "server.")
        if not module.name.endswith("__main__")
    ]
    assert len(names) > 100
    done = subprocess.run(
        [sys.executable, "-c", CHECK, *names], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
