"""`batch_options` of POST /jobs/batch, as the web UI sends them, checked against a whitelist.

`array_header` / `collect_header` are text with one `#SBATCH --option[=value]` per line (for
the task array and for the merge job); `array_options` / `collect_options` map option names
(with or without the leading `--`) to values. Only the options below are accepted, each value
matching its pattern: nothing can reach a shell (no spaces, quotes, `$`, backquotes, `;`,
newlines) and nothing can change what the job runs, where it writes, or whose environment it
gets (`--wrap`, `--output`, `--chdir`, `--export`, `--dependency`, `--array` are not options a
user sets). Anything else is a 400 naming the offending line or option, as is an option the
cluster's operator locked (`locked_options` of its [[clusters]] entry: an `--account` or
`--qos` that every job of the cluster's one SSH identity would be charged to).
"""

import re
from dataclasses import dataclass
from typing import Any

from server.errors import BadRequest

_WORD = r"[A-Za-z0-9_.,:@%+=/-]+"
_NUMBER = r"\d+"
_TIME = r"(\d+-)?\d+(:\d{1,2}){0,2}"
_MEMORY = r"\d+[KMGT]?"
ALLOWED: dict[str, str] = {
    "time": _TIME,
    "time-min": _TIME,
    "partition": _WORD,
    "account": _WORD,
    "qos": _WORD,
    "reservation": _WORD,
    "constraint": _WORD,
    "nodes": r"\d+(-\d+)?",
    "ntasks": _NUMBER,
    "ntasks-per-node": _NUMBER,
    "cpus-per-task": _NUMBER,
    "mem": _MEMORY,
    "mem-per-cpu": _MEMORY,
    "gres": _WORD,
    "gpus": _WORD,
    "licenses": _WORD,
    "tmp": _MEMORY,
    "nice": r"-?\d+",
    "mail-type": r"[A-Z_,0-9]+",
    "mail-user": r"[A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+",
    "hint": _WORD,
    "exclusive": "",
    "requeue": "",
    "no-requeue": "",
}
_LINE = re.compile(r"^#SBATCH\s+--([a-z-]+)(?:[= ](\S*))?\s*$")
TEXT_FIELDS = ("array_header", "collect_header")
OPTION_FIELDS = ("array_options", "collect_options")


@dataclass(frozen=True)
class BatchOptions:
    cluster_name: str
    array_lines: tuple[str, ...]  # checked "#SBATCH --name=value" lines for the task array
    collect_lines: tuple[str, ...]  # the same for the merge job
    given: tuple[tuple[str, str], ...]  # (option name, where it was given) of every line


def option_names(text: str) -> list[str]:
    """The option names of a comma- or space-separated list, without their leading `--`."""
    return [item.removeprefix("--") for item in re.split(r"[\s,]+", text) if item]


def check_unlocked(options: BatchOptions, cluster_name: str, locked_options: str) -> None:
    """400 for the first option of `options` that the cluster locks (its `locked_options`)."""
    locked = option_names(locked_options)
    for name, where in options.given:
        if name in locked:
            raise BadRequest(
                f"Invalid batch_options.{where}: option --{name} is locked on cluster {cluster_name}"
            )


def _line(name: str, value: str | None, where: str) -> str:
    """The checked `#SBATCH` line for one option; 400 when it is not allowed."""
    pattern = ALLOWED.get(name)
    if pattern is None:
        raise BadRequest(f"Invalid batch_options.{where}: option --{name} is not allowed")
    if pattern == "":
        if value:
            raise BadRequest(f"Invalid batch_options.{where}: --{name} takes no value")
        return f"#SBATCH --{name}"
    if value is None or not re.fullmatch(pattern, value, re.ASCII):  # \d: 0-9 only
        raise BadRequest(f"Invalid batch_options.{where}: bad value for --{name}")
    return f"#SBATCH --{name}={value}"


Given = list[tuple[str, str, str]]  # (#SBATCH line, option name, where it was given)


def _header(text: Any, where: str) -> Given:
    if text is None:
        return []
    if not isinstance(text, str):
        raise BadRequest(f"Field batch_options.{where} must be of type string")
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        match = _LINE.match(raw.strip())
        if match is None:
            raise BadRequest(
                f"Invalid batch_options.{where}: line {number} is not an '#SBATCH --option' line"
            )
        here = f"{where}: line {number}"
        lines.append((_line(match[1], match[2], here), match[1], here))
    return lines


def _options(options: Any, where: str) -> Given:
    if options is None:
        return []
    if not isinstance(options, dict):
        raise BadRequest(f"Field batch_options.{where} must be of type object")
    lines = []
    for key, value in options.items():
        name = key.removeprefix("--")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRequest(f"Invalid batch_options.{where}: --{name} must be a string or integer")
        lines.append((_line(name, str(value), where), name, where))
    return lines


def parse_batch_options(body: dict[str, Any]) -> BatchOptions:
    options = body.get("batch_options")
    if options is None:
        raise BadRequest("Missing field: batch_options")
    if not isinstance(options, dict):
        raise BadRequest("Field batch_options must be of type object")
    name = options.get("cluster_name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("Field batch_options.cluster_name must be of type string")
    if not name:
        raise BadRequest("Missing field: batch_options.cluster_name")
    known = {"cluster_name", "slurm_options", *TEXT_FIELDS, *OPTION_FIELDS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BadRequest(f"Unknown field: batch_options.{unknown[0]}")
    array = _header(options.get("array_header"), "array_header")
    array += _options(options.get("array_options"), "array_options")
    array += _options(options.get("slurm_options"), "slurm_options")
    collect = _header(options.get("collect_header"), "collect_header")
    collect += _options(options.get("collect_options"), "collect_options")
    given = tuple((option, where) for _, option, where in array + collect)
    return BatchOptions(name, _lines(array), _lines(collect), given)


def _lines(given: Given) -> tuple[str, ...]:
    return tuple(line for line, _, _ in given)
