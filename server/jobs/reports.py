"""What workers report: validation of `POST /tasks`, `POST /jobs` and `POST /logfiles` bodies
(the moves they ask for are judged by server.jobs.states)."""

import math
from datetime import UTC, datetime
from typing import Any

from server.errors import BadRequest
from server.jobs.states import JOB_STATES
from server.models import TaskUpdate
from server.parsing import field
from server.store.logfiles import LogText, Pieces
from server.values import MAX_INT32, MAX_INT64

# Times a task can show: asyncpg reads 0001-01-01 and 9999-12-31T23:59:59.999999 back as its
# naive -infinity/infinity sentinels, and a year before 1000 is not shown with four digits.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_LOGFILE_NAME = 255
MAX_LOGFILES = 10_000  # log files of one simulation (1000 tasks, a few each)


def _count(name: str, value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"Field update_dict.{name} must be of type integer")
    if not 0 <= value <= maximum:
        raise BadRequest(f"Invalid update_dict.{name}: must be between 0 and {maximum}")
    return value


def _seconds(name: str, value: Any) -> int:
    """Estimated seconds: workers send ints or floats; stored rounded to whole seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"Field update_dict.{name} must be a number")
    if not (math.isfinite(value) and 0 <= value <= MAX_INT32):
        raise BadRequest(f"Invalid update_dict.{name}: must be between 0 and {MAX_INT32}")
    return round(value)


def _timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"Field update_dict.{name} must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"Invalid update_dict.{name}: not an ISO 8601 timestamp") from None
    # A time without an offset is taken as UTC, like every time in the API. Stored as UTC: a
    # time near year 1 or 9999 may not have a UTC equivalent that Python can represent.
    try:
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise BadRequest(f"Invalid update_dict.{name}: out of range once in UTC") from None
    if not EARLIEST <= moment < LATEST:
        raise BadRequest(f"Invalid update_dict.{name}: must be in the years 1970 to 9998")
    return moment


def _state(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"Field update_dict.{name} must be of type string")
    return _known_state(f"update_dict.{name}", value)


def _known_state(name: str, value: str) -> str:
    if value not in JOB_STATES:
        raise BadRequest(f"Invalid {name}: must be one of {', '.join(JOB_STATES)}")
    return value


_PARSERS = {
    "task_state": _state,
    "simulated_primaries": lambda name, value: _count(name, value, MAX_INT64),
    "requested_primaries": lambda name, value: _count(name, value, MAX_INT64),
    "estimated_time": _seconds,
    "start_time": _timestamp,
    "end_time": _timestamp,
}


def parse_update_dict(update_dict: dict[str, Any]) -> TaskUpdate:
    """400 for an unknown key or a value of the wrong type; a null value counts as not sent."""
    unknown = sorted(set(update_dict) - set(_PARSERS))
    if unknown:
        raise BadRequest(f"Unknown field in update_dict: {unknown[0]}")
    values: dict[str, Any] = {
        name: _PARSERS[name](name, value)
        for name, value in update_dict.items()
        if value is not None
    }
    return TaskUpdate(**values)


def parse_task_id(body: dict[str, Any]) -> int:
    value: int = field(body, "task_id", int)
    if not 1 <= value <= MAX_INT32:
        raise BadRequest("Invalid task_id: must be a positive integer")
    return value


def parse_job_state(body: dict[str, Any]) -> str:
    return _known_state("job_state", field(body, "job_state", str))


def parse_logfiles(value: dict[str, Any]) -> dict[str, LogText]:
    """{name: text}; PostgreSQL text cannot hold NUL, so NULs in a log become U+FFFD (a long
    text's pieces each in turn: one piece copied at a time)."""
    files: dict[str, LogText] = {}
    for name, text in value.items():
        if not name or len(name) > MAX_LOGFILE_NAME or "\0" in name:
            raise BadRequest(f"Invalid logfile name: 1-{MAX_LOGFILE_NAME} characters, no NUL")
        if isinstance(text, Pieces):
            for number, piece in enumerate(text):
                text[number] = piece.replace("\0", "\ufffd")
            files[name] = text
        elif isinstance(text, str):
            files[name] = text.replace("\0", "\ufffd")
        else:
            raise BadRequest(f"Invalid logfile {name}: content must be a string")
    return files
