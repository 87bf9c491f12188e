"""Parsing an uploaded `POST /results` body into stored pages (the upload half of the hot path).

Each page is serialised once (orjson, exactly the object the worker sent) and compressed once
into a joinable deflate segment; only its number, name and dimensions are read from it.
"""

import zlib
from typing import Any

import orjson

from server import values
from server.errors import BadRequest, PayloadTooLarge
from server.limits.pauses import Pauses
from server.models import StoredEstimator, StoredPage
from server.results.deflate import crc_shift, encode_segment
from server.results.pagesplit import PageSpans, is_placeholder
from server.values import MAX_INT32

# Estimator names are in a unique index, whose entries PostgreSQL keeps under about 2.7 kB.
MAX_NAME = 255
MAX_PAGE_NAME = 4096
# Pages and estimators in one upload: each costs ~1 KB in memory while it is stored, however
# small (a real result has tens to hundreds).
MAX_ITEMS = 10_000


def page_number_of(page: dict[str, Any]) -> int | None:
    number = page.get("page_number")
    if number is None and isinstance(page.get("metadata"), dict):
        number = page["metadata"].get("page_number")
    if isinstance(number, str):
        number = values.decimal(number.strip())
    if (
        isinstance(number, int)
        and not isinstance(number, bool)
        and -MAX_INT32 - 1 <= number <= MAX_INT32
    ):
        return number
    return None


def page_name_of(page: dict[str, Any]) -> str:
    name = page.get("name")
    if name is None and isinstance(page.get("metadata"), dict):
        name = page["metadata"].get("name")
    return values.text(name, "page name", MAX_PAGE_NAME) if isinstance(name, str) else ""


def dimensions_of(page: dict[str, Any]) -> list[int]:
    """Axis lengths: data.dimensions when a list of axes, else axis_dim1..3, else [len(values)]."""
    data: dict[str, Any] = page["data"] if isinstance(page.get("data"), dict) else {}
    axes = data.get("dimensions")
    if isinstance(axes, list) and axes and all(isinstance(axis, list) for axis in axes):
        return [len(axis) for axis in axes]
    lengths = []
    for key in ("axis_dim1", "axis_dim2", "axis_dim3"):
        axis = page.get(key)
        if isinstance(axis, dict) and isinstance(axis.get("values"), list):
            lengths.append(len(axis["values"]))
    if lengths:
        return lengths
    values = data.get("values")
    return [len(values)] if isinstance(values, list) else []


def serialise(value: Any, what: str) -> bytes:
    """`value` as JSON; 400 naming `what` when orjson read it but cannot write it back (nested
    deeper than orjson writes: it reads up to 1024 levels, writes up to 254)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise BadRequest(f"Invalid {what}: nested too deeply") from None


def encode_page(page: dict[str, Any], number: int, what: str = "page") -> StoredPage:
    raw = serialise(page, what)
    return StoredPage(
        page_number=number,
        name=page_name_of(page),
        dimensions=dimensions_of(page),
        data=encode_segment(raw),
        crc32=zlib.crc32(raw),
        crc_shift=crc_shift(len(raw)),
        raw_size=len(raw),
    )


async def _estimator(
    entry: Any, index: int, source: PageSpans | None, pauses: Pauses
) -> StoredEstimator:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise BadRequest(f"Invalid estimators[{index}]: needs a non-empty string name")
    name = values.text(entry["name"], f"estimators[{index}].name", MAX_NAME)
    pages = entry.get("pages")
    if not isinstance(pages, list):
        raise BadRequest(f"Invalid estimator {name!r}: pages must be an array")
    stored, seen = [], set()
    for position, item in enumerate(pages):
        # A large upload's pages are parsed here, one at a time, and dropped once encoded.
        page = item
        if source is not None and is_placeholder(item):
            page = source.load(item)
            pages[position] = None  # the placeholder list is ours (made by split_upload)
        number = page_number_of(page) if isinstance(page, dict) else None
        if number is None:
            raise BadRequest(f"Invalid page in estimator {name!r}: no integer page_number")
        if number < 0:  # GET /results could never ask for it (spec/api.md: 400)
            raise BadRequest(
                f"Invalid page in estimator {name!r}: page_number must not be negative"
            )
        if number in seen:
            raise BadRequest(f"Duplicate page number {number} in estimator {name!r}")
        seen.add(number)
        stored.append(encode_page(page, number, f"page in estimator {name!r}"))
        await pauses()
    return StoredEstimator(name, stored, other_fields(entry, f"estimator {name!r}"))


def other_fields(entry: dict[str, Any], what: str = "estimator") -> bytes:
    """The estimator's members other than name and pages, as JSON members without braces."""
    rest = {key: value for key, value in entry.items() if key not in ("name", "pages")}
    return serialise(rest, what)[1:-1]


def _check_count(estimators: list[Any]) -> None:
    pages = (entry.get("pages") for entry in estimators if isinstance(entry, dict))
    count = len(estimators) + sum(len(found) for found in pages if isinstance(found, list))
    if count > MAX_ITEMS:
        raise PayloadTooLarge(
            f"Too many results in one upload: {count} estimators and pages, at most {MAX_ITEMS}"
        )


async def parse_estimators(
    estimators: Any, source: PageSpans | None = None, pauses: Pauses | None = None
) -> list[StoredEstimator]:
    """Validate and encode the `estimators` list of an upload; 400 before anything is stored.
    Other requests are answered meanwhile (`pauses` between pages: server/limits/pauses.py).

    `source`: where a large upload's pages are (server/results/pagesplit.py), if it was split.
    """
    pauses = pauses or Pauses()
    if estimators is None:
        raise BadRequest("Missing field: estimators")
    if not isinstance(estimators, list):
        raise BadRequest("Field estimators must be of type array")
    _check_count(estimators)
    parsed = [await _estimator(entry, i, source, pauses) for i, entry in enumerate(estimators)]
    names = [estimator.name for estimator in parsed]
    if len(set(names)) != len(names):
        raise BadRequest("Duplicate estimator name in one upload")
    return parsed
