"""Validation of `POST /jobs/direct` bodies: what to store and how to split the primaries."""

import math
import re
from dataclasses import dataclass
from typing import Any

from server import values
from server.config import JobsConfig
from server.errors import BadRequest
from server.parsing import field

SIM_TYPES = ("shieldhit", "fluka", "geant4", "topas")
INPUT_TYPES = ("editor", "files")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: no "$" before a newline
MAX_FILES = 64
DEFAULT_TITLE = "Untitled simulation"
MAX_TITLE = 1000  # characters: listed on every page of GET /user/simulations
# An input orjson reads (1,024 levels) but cannot write back (254), or that exhausts Python's
# recursion limit in the converter.
NESTED_TOO_DEEPLY = "Invalid input: nested too deeply"
# Blanks, not \s: across lines, a file of blank lines took time growing with its square.
_NSTAT = re.compile(r"^[ \t]*NSTAT[ \t]+([0-9]+)", re.MULTILINE)
_FLUKA_START = re.compile(r"^START[ \t]+([0-9.eE+-]+)", re.MULTILINE)


@dataclass(frozen=True)
class Submission:
    sim_type: str
    input_type: str
    ntasks: int
    title: str
    input: dict[str, Any]
    primaries: list[int]  # per task
    files: dict[str, str] | None = None  # converted from an editor project (jobs/conversion.py)


def split_primaries(total: int, ntasks: int) -> list[int]:
    """`total` split as evenly as possible, the remainder spread over the first tasks."""
    share, remainder = divmod(total, ntasks)
    return [share + (1 if i < remainder else 0) for i in range(ntasks)]


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value: str = field(body, name, str)
    if value not in choices:
        raise BadRequest(f"Invalid {name}: must be one of {', '.join(choices)}")
    return value


def _input(body: dict[str, Any], input_type: str) -> dict[str, Any]:
    alternative = "input_json" if input_type == "editor" else "input_files"
    name = "sim_data" if body.get("sim_data") is not None else alternative
    if body.get(name) is None:
        raise BadRequest(f"Missing field: sim_data (or {alternative})")
    data: dict[str, Any] = field(body, name, dict)
    return data


def _check_files(files: dict[str, Any], max_size: int) -> None:
    if not files:
        raise BadRequest("Invalid input files: at least one file is required")
    if len(files) > MAX_FILES:
        raise BadRequest(f"Invalid input files: at most {MAX_FILES} files")
    for name, text in files.items():
        if not FILE_NAME.fullmatch(name) or ".." in name:
            raise BadRequest(f"Invalid file name: {name!r}")
        if not isinstance(text, str):
            raise BadRequest(f"Invalid file {name}: content must be a string")
        if len(text.encode()) > max_size:
            raise BadRequest(f"Invalid file {name}: larger than {max_size} bytes")


def _primaries(value: float, where: str) -> int:
    """A primaries count read from the input: a whole number from 0 to the bigint maximum."""
    if not (math.isfinite(value) and 0 <= value <= values.MAX_INT64):
        raise BadRequest(f"Invalid {where}: must be between 0 and {values.MAX_INT64} primaries")
    return int(value)


def _default_primaries(input_type: str, data: dict[str, Any]) -> int:
    if input_type == "editor":
        beam = data.get("beam")
        count = beam.get("numberOfParticles") if isinstance(beam, dict) else None
        if count is None:
            return 0  # the conversion says a number of primaries is wanted
        if not _whole(count) or count <= 0:  # (10000.0 is whole: JSON does not tell them apart)
            raise BadRequest(
                f"Invalid beam.numberOfParticles: must be a whole number of 1 or more (got "
                f"{count!r}; or give number_of_primaries)"
            )
        return _primaries(count, "beam.numberOfParticles")
    for name, text in data.items():
        pattern = _NSTAT if name == "beam.dat" else _FLUKA_START if name.endswith(".inp") else None
        match = pattern.search(text) if pattern else None
        if match:
            return _primaries(_number(match.group(1), name), f"primaries in {name}")
    return 0


def _whole(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"Invalid {name}: {text!r} is not a number of primaries") from None


def _default_title(input_type: str, data: dict[str, Any]) -> str:
    project = data.get("project") if input_type == "editor" else None
    title = project.get("title") if isinstance(project, dict) else None
    if not isinstance(title, str) or not title.strip():
        return DEFAULT_TITLE
    return values.text(title, "project.title", MAX_TITLE)


def parse_submission(body: dict[str, Any], limits: JobsConfig) -> Submission:
    sim_type = _choice(body, "sim_type", SIM_TYPES)
    ntasks = field(body, "ntasks", int)
    if not 1 <= ntasks <= limits.max_ntasks:
        raise BadRequest(f"Invalid ntasks: must be between 1 and {limits.max_ntasks}")
    input_type = _choice(body, "input_type", INPUT_TYPES)
    data = _input(body, input_type)
    if input_type == "files":
        _check_files(data, limits.max_file_size)
    title = field(body, "title", str, required=False)
    title = values.text(title, "title", MAX_TITLE) if title else _default_title(input_type, data)
    total = field(body, "number_of_primaries", int, required=False)
    if total is not None and total < 0:
        raise BadRequest("Invalid number_of_primaries: must be 0 or more")
    if total is not None and total > values.MAX_INT64:
        raise BadRequest(f"Invalid number_of_primaries: at most {values.MAX_INT64}")
    if total is None:
        total = _default_primaries(input_type, data)
    return Submission(sim_type, input_type, ntasks, title, data, split_primaries(total, ntasks))
