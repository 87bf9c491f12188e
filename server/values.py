"""Checks for values on their way to PostgreSQL, shared by every parser.

PostgreSQL `text` cannot hold NUL, `bigint` and `integer` have bounds, and Python's `int()` and
`str.isdigit()` accept far more than ASCII decimal numbers (`"²"`, a full-width 1 (U+FF11),
`"5_0"`, thousands of digits). A value that breaks one of these is the client's mistake: a 400 naming it, never a 500.
"""

import re

from multidict import MultiMapping

from server.errors import BadRequest

# Bounds of PostgreSQL integer and bigint columns.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,20}")


def text(value: str, name: str, max_length: int | None = None) -> str:
    """`value` when PostgreSQL can store it (no NUL) and it is at most `max_length` characters."""
    if "\0" in value:
        raise BadRequest(f"Invalid {name}: must not contain NUL characters")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"Invalid {name}: at most {max_length} characters")
    return value


def decimal(value: str) -> int | None:
    """The integer an ASCII decimal string (optional minus, up to 20 digits) spells, else None."""
    return int(value) if _DECIMAL.fullmatch(value) else None


def one(query: MultiMapping[str], name: str) -> str | None:
    """The value of query parameter `name` (None when absent); 400 when it is given more than
    once (`job_id=A&job_id=B`): which one was meant cannot be known."""
    found = query.getall(name, [])
    if len(found) > 1:
        raise BadRequest(f"Invalid {name}: given more than once")
    return found[0] if found else None
