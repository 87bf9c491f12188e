"""`run.py convert PROJECT.json OUTDIR`: an editor project's SHIELD-HIT12A input files, written
into a directory (the project JSON, or a submission body holding it as `input_json`)."""

import argparse

import orjson

from server.config import Config
from server.editor import ConversionError
from server.editor import convert as convert_project
from server.values import MAX_INT64


def convert_command(config: Config, args: argparse.Namespace) -> None:
    """Write the files of `args.project` into `args.outdir`; one line on stderr if it cannot."""
    try:
        data = orjson.loads(args.project.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"Error: {args.project} is not JSON ({exc})") from None
    project = data.get("input_json", data) if isinstance(data, dict) else data
    beam = project.get("beam") if isinstance(project, dict) else None
    primaries = args.primaries or (
        beam.get("numberOfParticles") if isinstance(beam, dict) else None
    )
    if primaries is None:
        raise SystemExit("Error: the project has no beam.numberOfParticles: give --primaries N")
    if not isinstance(primaries, int) or isinstance(primaries, bool) or primaries < 1:
        raise SystemExit(
            f"Error: primaries must be a whole number of 1 or more (got {primaries!r})"
        )
    if primaries > MAX_INT64:  # the API refuses such a count: no simulation could be made of it
        raise SystemExit(f"Error: primaries must be at most {MAX_INT64} (got {primaries})")
    try:
        files = convert_project(project, primaries)
    except ConversionError as exc:
        raise SystemExit(f"Error: {exc}") from None
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.outdir / name).write_text(text)
        print(args.outdir / name)
