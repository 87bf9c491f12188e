"""Reading the editor's project JSON: typed accessors whose errors name the project item.

The project comes from a user, so every field is checked where it is read; a missing or
mistyped field is a `ConversionError` naming the item (figure, zone, detector, output, ...)
and the field, never a KeyError or TypeError deeper down.
"""

import math
from typing import Any, TypeGuard, TypeVar

Json = dict[str, Any]
T = TypeVar("T")
MAX_INTEGER = 2**31 - 1  # Fortran's default INTEGER, as SHIELD-HIT12A reads counts and codes


class ConversionError(Exception):
    """The project cannot be written as SHIELD-HIT12A input; says which item and why."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(f"{item}: {problem}")
        self.item = item
        self.problem = problem


def label(kind: str, value: Json, index: int) -> str:
    """How messages name an item: `figure 'Water'`, or `figure #2` when it has no name."""
    name = value.get("name")
    if isinstance(name, str) and name.strip():
        return f"{kind} {name.strip()!r}"
    return f"{kind} #{index + 1}"


def by_uuid(found: dict[str, T], value: Json, item: str, what: T) -> None:
    """`what` kept under the uuid of `value` (none: not kept), which no other item of its kind
    may have: a reference to it would otherwise pick one of them silently."""
    uuid = value.get("uuid")
    if not isinstance(uuid, str):
        return
    if uuid in found:
        raise ConversionError(item, f"its uuid {uuid!r} is another item's too (uuids are unique)")
    found[uuid] = what


def section(data: Json, key: str, item: str) -> Json:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConversionError(item, f"'{key}' must be an object")
    return value


def entries(data: Json, key: str, item: str, *, required: bool = True) -> list[Json]:
    """A list of objects; an absent optional list is empty."""
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConversionError(item, f"'{key}' must be a list of objects")
    return value


def number(data: Json, key: str, item: str, *, minimum: float | None = None) -> float:
    value = data.get(key)
    if not _finite(value):
        raise ConversionError(item, f"'{key}' must be a number")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ConversionError(item, f"'{key}' must be at least {minimum:g} (got {value:g})")
    return value


def positive(data: Json, key: str, item: str) -> float:
    value = number(data, key, item)
    if value <= 0:
        raise ConversionError(item, f"'{key}' must be greater than 0 (got {value:g})")
    return value


def integer(data: Json, key: str, item: str, *, minimum: int = 0) -> int:
    """A whole number of a card, which SHIELD-HIT12A reads as a 32-bit integer."""
    value = data.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError(item, f"'{key}' must be a whole number")
    if value < minimum:
        raise ConversionError(item, f"'{key}' must be at least {minimum} (got {value})")
    if value > MAX_INTEGER:
        raise ConversionError(item, f"'{key}' must be at most {MAX_INTEGER} (got {value})")
    return value


def text(data: Json, key: str, item: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ConversionError(item, f"'{key}' must be a string")
    return value


def flag(data: Json, key: str, item: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ConversionError(item, f"'{key}' must be true or false")
    return value


def vector(data: Json, key: str, item: str) -> tuple[float, float, float]:
    value = data.get(key)
    if not isinstance(value, list) or len(value) != 3 or not all(map(_finite, value)):
        raise ConversionError(item, f"'{key}' must be a list of 3 numbers")
    return float(value[0]), float(value[1]), float(value[2])


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def choice(data: Json, key: str, item: str, options: dict[str, int]) -> int:
    """The code of a named option, matched without regard to case."""
    value = text(data, key, item)
    code = options.get(value.strip().lower())
    if code is None:
        raise ConversionError(
            item, f"unknown '{key}' {value!r} (expected one of: {', '.join(options)})"
        )
    return code
