"""The UI dialect's response shapes: pure functions from the main API's bodies to the UI's.

The YAPTIDE web UI was written against the upstream backend, whose bodies differ from the seed
documents (shared/spec/ui-client.md). Every difference is one function here; none does I/O.
"""

from collections.abc import Callable
from typing import Any

import orjson

from server.editor.scoring import file_names

Json = dict[str, Any]

SERVER = "Yaptide"  # what the upstream backend puts in metadata.server
NO_JOB = "Job with provided ID does not exist"  # the UI shows no snackbar for this one


def list_item(item: Json) -> Json:
    """A simulation of the list, without `job_state`: the UI merges it over the polled status,
    and a state here would override the live one."""
    return {
        "job_id": item["job_id"],
        "title": item["title"],
        "start_time": item["start_time"],
        "end_time": item["end_time"],
        "metadata": {
            "platform": item["platform"].upper(),
            "server": SERVER,
            "input_type": item["input_type"].upper(),
            "sim_type": item["sim_type"],
        },
    }


def simulations(body: Json) -> Json:
    """`GET user/simulations`: items reshaped, paging fields kept."""
    return {**body, "simulations": [list_item(item) for item in body["simulations"]]}


def estimated_time(seconds: int | None) -> dict[str, int] | None:
    if seconds is None:
        return None
    seconds = max(int(seconds), 0)
    return {"hours": seconds // 3600, "minutes": seconds // 60 % 60, "seconds": seconds % 60}


def job_status(body: Json) -> Json:
    """`GET jobs/<platform>`: each task's `estimated_time` as hours, minutes and seconds."""
    tasks = [
        {**task, "estimated_time": estimated_time(task["estimated_time"])}
        for task in body["job_tasks_status"]
    ]
    return {**body, "job_tasks_status": tasks}


def estimator_name(stored: str) -> str:
    """The UI's name of a stored estimator: the output's name, without the `_` that the
    simulators' result file names (and so pymchelper's estimator names) add to it."""
    return stored.removesuffix("_") or stored


Outputs = list[tuple[str, str]]  # (name in the project, name of its file), in project order
# The outputs kept per process (app key PROJECT_OUTPUTS), in characters of their names (each
# counted OUTPUT_OVERHEAD more); a project's whole outputs larger than a quarter are not kept.
OUTPUTS_CACHE_SIZE = 16 << 20
OUTPUT_OVERHEAD = 100


def outputs_size(outputs: Outputs) -> int:
    return sum(len(name) + len(file) + OUTPUT_OVERHEAD for name, file in outputs) + 1


def project_outputs(project: Any) -> Outputs:
    """An editor project's outputs (`scoringManager.outputs`): each one's name, and the name
    its file and so its estimator get (made safe and unique by the converter)."""
    manager = project.get("scoringManager") if isinstance(project, dict) else None
    outputs = manager.get("outputs") if isinstance(manager, dict) else None
    if not isinstance(outputs, list):
        return []
    values = [output for output in outputs if isinstance(output, dict)]
    files = file_names(values)
    names = [
        value["name"] if isinstance(value.get("name"), str) else file
        for value, file in zip(values, files, strict=True)
    ]
    return list(zip(_unique(names, files), files, strict=True))


def _unique(names: list[str], files: list[str]) -> list[str]:
    """Each output's name for the UI: its name in the project, unless an earlier output has
    it; then its file's name, kept clear of every project name. The UI fetches an estimator's
    pages by this name and keys its tabs by it: two outputs listed as `peak` would both show
    the first one's results."""
    project, taken, unique = set(names), set(), []
    for name, file in zip(names, files, strict=True):
        candidate = name
        if candidate in taken:
            candidate, suffix = file, 2
            while candidate in taken or candidate in project:
                candidate, suffix = f"{file}_{suffix}", suffix + 1
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _by_estimator(outputs: Outputs) -> dict[str, tuple[int, str]]:
    """(position, project name) by an estimator's name without its `_`: the output's file
    name, else (an operator's converter may keep names as they are) its name."""
    found: dict[str, tuple[int, str]] = {}
    for position, (name, file) in enumerate(outputs):
        found.setdefault(file, (position, name))
    for position, (name, _) in enumerate(outputs):
        found.setdefault(name, (position, name))
    return found


def stored_names(name: str, outputs: Outputs | None = None) -> tuple[str, ...]:
    """The stored estimator names a UI name may stand for, the likelier first: the file of
    the output of that name, then the name itself."""
    files = [file for output, file in outputs or [] if output == name]
    candidates = [*files, name]
    names = (n for c in candidates for n in ((c + "_", c) if not c.endswith("_") else (c,)))
    return tuple(dict.fromkeys(names))


def ui_names(outputs: Outputs) -> Callable[[str], str]:
    """The UI's name of a stored estimator (the name of its output in the project), for many
    estimators of one project: its outputs are looked up once, not once per estimator (a
    project may have thousands of outputs)."""
    found = _by_estimator(outputs)

    def name_of(stored: str) -> str:
        name = estimator_name(stored)
        return found.get(name, (0, name))[1]

    return name_of


def project_position(outputs: Outputs) -> Callable[[str], int]:
    """A sort key putting stored estimators in the order of the project's outputs (the UI pairs
    `outputs[i]` with `estimators[i]`); estimators of no output go last, in stored order."""
    found = _by_estimator(outputs)
    return lambda stored: found.get(estimator_name(stored), (len(outputs), ""))[0]


def page_dimension(dimensions: list[int]) -> int:
    """The number of axes with more than one bin (pymchelper's page dimension, 0 to 3): a
    single value is stored as one axis of length 1."""
    return min(sum(1 for length in dimensions if length > 1), 3)


def estimators(body: Json, outputs: Outputs | None = None) -> Json:
    """`GET estimators`: `estimators_metadata[].pages_metadata[]`, in the project's order."""
    order, name_of = project_position(outputs or []), ui_names(outputs or [])
    return {
        "message": body["message"],
        "estimators_metadata": [
            {
                "name": name_of(estimator["name"]),
                "pages_metadata": [
                    {
                        "page_number": page["page_number"],
                        "page_name": page["name"],
                        "page_dimension": page_dimension(page["dimensions"]),
                    }
                    for page in estimator["pages"]
                ],
            }
            for estimator in sorted(body["estimators"], key=lambda e: order(e["name"]))
        ],
    }


def inputs(input_type: str, has_files: bool, primaries: int) -> list[bytes | str]:
    """`GET inputs`: the input under `input`, with its type upper-cased and the total primaries.

    Editor input is the project (`input_json`) and the simulator files converted from it
    (`input_files`, empty if none were stored); files input is `{name: text}`. Spliced from
    the stored JSON as it is ("data", "files": server/jobs/input_answers.py): inputs may be
    tens of MB, and parsing them to serialise them again took about 14 times their size.
    """
    parts: list[bytes | str] = [b'{"message":"Inputs","input":{"input_type":']
    parts.append(orjson.dumps(input_type.upper()))
    if input_type == "editor":
        parts += [b',"input_json":', "data", b',"input_files":', "files" if has_files else b"{}"]
    else:
        parts += [b',"input_files":', "data"]
    return [*parts, b',"number_of_all_primaries":', b"%d" % primaries, b"}}"]
