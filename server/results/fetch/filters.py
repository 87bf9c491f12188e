"""Query filters of `GET /results`: `page_number=N` or `page_numbers=1-3,5`."""

import re

from multidict import MultiMapping

from server import values
from server.errors import BadRequest
from server.values import MAX_INT32

MAX_PAGES = 10_000
# ASCII digits only, at most 20: int() would take "²"-like digits and choke on 5,000 of them.
_PART = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def _ranges(spec: str) -> list[tuple[int, int]]:
    """The inclusive ranges of a spec like `1-3,5`; 400 for a part that is not one."""
    ranges = []
    for part in spec.split(","):
        match = _PART.fullmatch(part.strip())
        if not match:
            raise BadRequest(f"Invalid page_numbers: {part!r} is not a number or a range like 1-3")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise BadRequest(f"Invalid page_numbers: the range {part!r} is reversed")
        ranges.append((first, last))
    return ranges


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges sorted, with overlapping or adjacent ones joined (nothing is expanded)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def parse_page_spec(spec: str) -> list[int]:
    """Sorted page numbers of a spec like `1-3,5`; 400 on anything else, or when it expands to
    more than MAX_PAGES pages (parts that overlap count once)."""
    ranges = _merged(_ranges(spec))
    if sum(last - first + 1 for first, last in ranges) > MAX_PAGES:
        raise BadRequest(f"Invalid page_numbers: more than {MAX_PAGES} pages")
    if ranges[-1][1] > MAX_INT32:
        raise BadRequest("Invalid page_numbers: page number too large")
    return [number for first, last in ranges for number in range(first, last + 1)]


def page_filter(params: MultiMapping[str]) -> list[int] | None:
    """The page numbers asked for, or None for all pages."""
    single, spec = values.one(params, "page_number"), values.one(params, "page_numbers")
    if single is not None and spec is not None:
        raise BadRequest("Give either page_number or page_numbers, not both")
    if single is not None:
        number = values.decimal(single.strip())  # blanks ignored, as in page_numbers
        if number is None or not 0 <= number <= MAX_INT32:
            raise BadRequest("Invalid page_number: must be a non-negative integer")
        return [number]
    if spec is not None:
        return parse_page_spec(spec)
    return None
