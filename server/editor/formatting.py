"""How numbers and names are written into SHIELD-HIT12A input files.

geo.dat is read with fixed columns: body parameters are 10-character fields, so each number is
printed with as many decimals as fit and refused when even its integer part does not fit.
The keyword files (beam.dat, detect.dat, mat.dat) take free-format numbers; these are printed
with 12 significant digits, which drops the noise of float arithmetic (15.35 - 0.05 is written
15.3, not 15.299999999999999) while keeping far more precision than any input needs.
Names become tokens of detect.dat and file names, so they are reduced to `[A-Za-z0-9_-]`.
"""

import math
import re

from server.editor.project import ConversionError

FIELD = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_NAME = 64


def fixed(value: float, item: str, width: int = FIELD) -> str:
    """`value` right-aligned in `width` characters with as many decimals as fit.

    One column stays blank, so that neighbouring fields never touch (also for readers that
    split on spaces). A sum of finite numbers can overflow to infinity, which fits no field.
    """
    if not math.isfinite(value):
        raise ConversionError(item, f"the number {value:g} does not fit a {width}-character field")
    for decimals in range(width - 3, -1, -1):
        digits = f"{value:.{decimals}f}"
        text = _trim(digits) if decimals else f"{digits}."  # no room for a decimal: "-1234568."
        if len(text) < width:
            return text.rjust(width)
    raise ConversionError(item, f"the number {value:g} does not fit a {width}-character field")


def _trim(digits: str) -> str:
    whole, _, decimals = digits.partition(".")
    text = f"{whole}.{decimals.rstrip('0') or '0'}"
    return "0.0" if float(text) == 0 else text  # never "-0.0"


def free(value: float) -> str:
    """A real for a keyword card: 12 significant digits, always with a point or an exponent."""
    digits = f"{value + 0.0:.12g}"  # + 0.0: never "-0"
    return digits if any(mark in digits for mark in ".e") else f"{digits}.0"


def count(value: float) -> str:
    """A value that is usually whole (a filter's Z, A, GEN, ID): without decimals when whole
    and a 32-bit integer (1e308 is no 309-digit count), else as a real."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**31 else free(value)


def safe_name(name: str) -> str:
    """`name` reduced to letters, digits, `_` and `-`: runs of anything else become `_`."""
    return _UNSAFE.sub("_", name.strip()).strip("_-")[:MAX_NAME]


class UniqueNames:
    """Hands out safe names, never the same one twice (case-insensitively: file systems)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self._counts: dict[str, int] = {}  # by base: the suffix tried last (many of one name)

    def take(self, name: str, fallback: str) -> str:
        base = safe_name(name) or fallback
        candidate, count = base, self._counts.get(base.lower(), 1)
        while candidate.lower() in self.taken:
            count += 1
            candidate = f"{base}_{count}"
        self._counts[base.lower()] = count
        self.taken.add(candidate.lower())
        return candidate
