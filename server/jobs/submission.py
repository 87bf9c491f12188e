"""Validation of `POST /jobs/direct` bodies: what to store and how to split the primaries."""

import re
from dataclasses import dataclass
from typing import Any

from server.config import JobsConfig
from server.errors import BadRequest
from server.http import field

SIM_TYPES = ("shieldhit", "fluka", "geant4", "topas")
INPUT_TYPES = ("editor", "files")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_FILES = 64
DEFAULT_TITLE = "Untitled simulation"
_NSTAT = re.compile(r"^\s*NSTAT\s+(\d+)", re.MULTILINE)
_FLUKA_START = re.compile(r"^START\s+([0-9.eE+]+)", re.MULTILINE)


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
        if not FILE_NAME.match(name) or ".." in name:
            raise BadRequest(f"Invalid file name: {name!r}")
        if not isinstance(text, str):
            raise BadRequest(f"Invalid file {name}: content must be a string")
        if len(text.encode()) > max_size:
            raise BadRequest(f"Invalid file {name}: larger than {max_size} bytes")


def _default_primaries(input_type: str, data: dict[str, Any]) -> int:
    if input_type == "editor":
        beam = data.get("beam")
        count = beam.get("numberOfParticles") if isinstance(beam, dict) else None
        return count if isinstance(count, int) and count > 0 else 0
    for name, text in data.items():
        pattern = _NSTAT if name == "beam.dat" else _FLUKA_START if name.endswith(".inp") else None
        match = pattern.search(text) if pattern else None
        if match:
            return int(float(match.group(1)))
    return 0


def _default_title(input_type: str, data: dict[str, Any]) -> str:
    project = data.get("project") if input_type == "editor" else None
    title = project.get("title") if isinstance(project, dict) else None
    return title if isinstance(title, str) and title.strip() else DEFAULT_TITLE


def parse_submission(body: dict[str, Any], limits: JobsConfig) -> Submission:
    sim_type = _choice(body, "sim_type", SIM_TYPES)
    ntasks = field(body, "ntasks", int)
    if not 1 <= ntasks <= limits.max_ntasks:
        raise BadRequest(f"Invalid ntasks: must be between 1 and {limits.max_ntasks}")
    input_type = _choice(body, "input_type", INPUT_TYPES)
    data = _input(body, input_type)
    if input_type == "files":
        _check_files(data, limits.max_file_size)
    title = field(body, "title", str, required=False) or _default_title(input_type, data)
    total = field(body, "number_of_primaries", int, required=False)
    if total is not None and total < 0:
        raise BadRequest("Invalid number_of_primaries: must be 0 or more")
    if total is None:
        total = _default_primaries(input_type, data)
    return Submission(sim_type, input_type, ntasks, title, data, split_primaries(total, ntasks))
