"""The order of a SHIELD-HIT12A run's outputs: the `Output` blocks of its detect.dat.

A task lists its result files in that order and the merge step keeps the order in which
estimators first appear, so the estimators of an editor project come back in the order of its
outputs, as the UI expects (it matches outputs and estimators by position). Files no `Output`
names (or a detect.dat that cannot be read) come after, by name.
"""

import re
from pathlib import Path

from server.worker.estimators import corename

_FILENAME = re.compile(r"^\s*filename\s+(\S+)", re.IGNORECASE)
_COMMENT = re.compile(r"[!#]")


def output_names(directory: Path) -> list[str]:
    """The outputs' file names without extension, in detect.dat's order."""
    try:
        text = (directory / "detect.dat").read_text(errors="replace")
    except OSError:
        return []
    lines = (_COMMENT.split(line, maxsplit=1)[0] for line in text.splitlines())
    return [Path(match[1]).stem for line in lines if (match := _FILENAME.match(line))]


def in_output_order(results: list[Path], directory: Path) -> list[Path]:
    rank = {name: index for index, name in enumerate(output_names(directory))}
    return sorted(
        results, key=lambda path: (rank.get(corename(path, "shieldhit"), len(rank)), path.name)
    )
