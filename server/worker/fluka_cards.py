"""A FLUKA input's START and RANDOMIZ cards set for one task: its primaries and its seed.

FLUKA reads option cards in fixed format (a keyword in 10 columns, then six 10-column WHATs and
SDUM) unless a FREE card (or GLOBAL's WHAT(4) = 2 or 3) switched to free format, where fields
are separated by blanks or one of `,;/\\:`, until a FIXED card. Each card is rewritten in the
format it is read in, its other WHATs as they were; the geometry (GEOBEGIN to GEOEND) is
skipped. The run starts at the first START with what was read before it, so the cards are read
up to there: a RANDOMIZ or START after it (or after a STOP, where FLUKA reads nothing more) is
left as it is. A task's seed must be read before START: an input without RANDOMIZ before it
gets one just before START (one appended after STOP would be ignored, and every task would run
the same histories).
"""

import re
from collections.abc import Iterator
from pathlib import Path

FIELD = 10
_SEPARATOR = re.compile(r"\s*[,;/\\:]\s*|\s+")


class MissingStart(Exception):
    """The input has no START card before its first STOP."""


def set_task_cards(path: Path, primaries: int, seed: int) -> None:
    """START's WHAT(1) = `primaries`, RANDOMIZ's WHAT(1) = 1 and WHAT(2) = `seed`; written to
    a new file renamed over `path` (the task's files are hard links to one shared copy)."""
    lines = path.read_text().splitlines(keepends=True)
    found = {keyword: (index, free) for index, keyword, free in _cards(lines)}
    if "START" not in found:
        raise MissingStart
    start, free = found["START"]
    lines[start] = _with_whats(lines[start], free, {1: primaries})
    randomize = {1: 1.0, 2: seed}
    if "RANDOMIZ" in found:
        index, randomize_free = found["RANDOMIZ"]
        lines[index] = _with_whats(lines[index], randomize_free, randomize)
    else:
        lines.insert(start, _with_whats("RANDOMIZ\n", free, randomize))
    replacement = path.with_name(path.name + ".new")
    replacement.write_text("".join(lines))
    replacement.replace(path)


def _cards(lines: list[str]) -> Iterator[tuple[int, str, bool]]:
    """(index, keyword, read in free format) of each option card outside the geometry, up to
    the first START or STOP."""
    free = geometry = False
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith(("*", "!")):
            continue
        keyword = _fields(line)[0] if free else line[:FIELD].strip()
        if geometry or keyword == "GEOBEGIN":
            geometry = not line.startswith("GEOEND")
        elif keyword in ("FREE", "FIXED"):
            free = keyword == "FREE"
        elif keyword == "GLOBAL":
            free = _global_format(_what(line, free, 4), free)
        yield index, keyword, free
        if keyword in ("START", "STOP"):
            return


def _global_format(flag: float | None, free: bool) -> bool:
    """Free format after GLOBAL, whose WHAT(4) asks for it (2: free, 3: free and names) or
    resets the default (below 0)."""
    if flag is None or flag == 0:
        return free
    return flag in (2.0, 3.0)


def _what(line: str, free: bool, number: int) -> float | None:
    fields = _fields(line) if free else [line[n * FIELD : (n + 1) * FIELD] for n in range(7)]
    try:
        return float(fields[number])
    except (IndexError, ValueError):
        return None


def _fields(line: str) -> list[str]:
    return _SEPARATOR.split(line.strip())


def _with_whats(line: str, free: bool, whats: dict[int, float | int]) -> str:
    """`line` with the WHATs numbered in `whats` set, every other field as it was."""
    body = line.rstrip("\r\n")
    ending = line[len(body) :] or "\n"
    if free:
        fields = _fields(body)
        fields += [""] * (max(whats) + 1 - len(fields))
        for number, value in whats.items():
            fields[number] = str(value)
        return ", ".join(fields) + ending
    for number, value in whats.items():
        body = body.ljust((number + 1) * FIELD)
        body = body[: number * FIELD] + _fixed(value) + body[(number + 1) * FIELD :]
    return body.rstrip() + ending


def _fixed(value: float | int) -> str:
    """A WHAT in its 10 columns, right-aligned: a count past 10 digits as a real (5 digits)."""
    text = str(value)
    return (text if len(text) <= FIELD else f"{value:.4E}").rjust(FIELD)
