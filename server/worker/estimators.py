"""Reading simulator result files with pymchelper, merging them, and turning them into pages.

Each file is read with its own format's reader. pymchelper's generic `fromfile()` first probes
every file as FLUKA output, which reads a SHIELD-HIT12A file's first bytes as a Fortran record
length and asks for ~830 MB: fatal under an HPC node's memory limit. The merge follows
pymchelper's `fromfilelist(files, ErrorEstimate.none, nan=False)` one file at a time (flat
memory): per page, by its `page_normalized`, the first task's values (0), the element-wise sum
(1), concatenation (4), or otherwise the mean weighted by each file's number of primaries. The
pages come out in the shape pymchelper's JSON writer gives the YAPTIDE platform.
"""

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
from pymchelper.averaging import (
    Aggregator,
    ConcatenatingAggregator,
    NoAggregator,
    SumAggregator,
    WeightedStatsAggregator,
)
from pymchelper.axis import MeshAxis
from pymchelper.estimator import ErrorEstimate, Estimator
from pymchelper.page import Page
from pymchelper.readers.fluka import FlukaReader, FlukaReaderFactory
from pymchelper.readers.shieldhit.general import SHReaderFactory
from pymchelper.readers.shieldhit.reader_base import SHReader

from server.worker.simulators import title_of

AGGREGATORS: dict[int, type[Aggregator]] = {
    0: NoAggregator,
    1: SumAggregator,
    2: WeightedStatsAggregator,  # cumulative (dose, fluence): normalised per primary on read
    3: WeightedStatsAggregator,  # per primary (LET)
    4: ConcatenatingAggregator,
}
NOT_METADATA = {"data", "data_raw", "error", "error_raw", "counter", "pages", "x", "y", "z"}
PAGE_NOT_METADATA = {"data_raw", "error_raw", "estimator", "diff_axis1", "diff_axis2"}


class MergeError(Exception):
    """The results cannot be merged; the message says why, for the user."""


def corename(path: Path, sim_type: str) -> str:
    """The estimator a file belongs to: its name without the task's seed suffix."""
    if sim_type == "fluka":
        return FlukaReader(str(path)).corename or path.name
    return SHReader(str(path)).corename or path.stem


class _OwnAxes(Estimator):  # type: ignore[misc]
    """pymchelper's FLUKA reader sets the file's x, y and z to each USRBIN detector's before
    adding its page, and leaves the last detector's: several detectors may write to one unit,
    so each page here keeps the axes it was added with."""

    def add_page(self, page: Page) -> None:
        super().add_page(page)
        self.pages[-1].estimator = copy.copy(self)


def _diff_units(estimator: Estimator) -> None:
    """A SHIELD-HIT12A page's `page_diff_units` is "<quantity>;<axis 1>;<axis 2>": pymchelper
    gives differential axis 1 the quantity's unit and axis 2 axis 1's (one place early)."""
    for page in estimator.pages:
        units = str(getattr(page, "page_diff_units", "")).split(";")
        for number, unit in enumerate(units[1:3], start=1):
            axis = f"diff_axis{number}"
            setattr(page, axis, getattr(page, axis)._replace(unit=unit))


def read_file(path: Path, sim_type: str) -> Estimator:
    name = f"{path.parent.name}/{path.name}"
    factory = FlukaReaderFactory if sim_type == "fluka" else SHReaderFactory
    estimator = _OwnAxes() if sim_type == "fluka" else Estimator()
    estimator.file_counter = 1
    try:
        reader = factory(str(path)).get_reader()
        read = reader is not None and reader(str(path)).read(estimator)
    except Exception as exc:  # pymchelper's readers fail in many ways on a damaged file
        raise MergeError(f"{name} could not be read ({type(exc).__name__}: {exc})") from None
    if not read:
        raise MergeError(f"{name} is not a readable {title_of(sim_type)} result file")
    if problem := _cut_short(estimator):
        raise MergeError(f"{name} is cut short or damaged: {problem}")
    _diff_units(estimator)
    return estimator


def _cut_short(estimator: Estimator) -> str | None:
    """What shows that a file pymchelper did read is incomplete (a full disk while it was
    written): no page, fewer pages than its header says, or a page with fewer values than its
    axes have bins; else None."""
    if not estimator.pages:
        return "it holds no page"
    expected = getattr(estimator, "page_count", None)
    if isinstance(expected, int | np.integer) and expected != len(estimator.pages):
        return f"it holds {len(estimator.pages)} of its {expected} pages"
    for number, page in enumerate(estimator.pages):
        bins = math.prod(page.plot_axis(axis).n for axis in range(page.dimension))
        if np.size(page.data_raw) != bins:
            return f"page {number} holds {np.size(page.data_raw)} values for {bins} bins"
    return None


def _aggregator(page: Page) -> Aggregator:
    # FLUKA pages carry no normalisation: they are per-primary quantities, averaged.
    return AGGREGATORS.get(int(getattr(page, "page_normalized", 2)), WeightedStatsAggregator)()


def _scoring(page: Page) -> dict[str, Any]:
    """What a page scores and over which bins: two tasks' pages are merged only when they agree."""
    return {
        "quantity": (page.dettyp, page.name, page.unit, getattr(page, "page_normalized", None)),
        "geometry": getattr(page.estimator, "geotyp", None),
        "bins": tuple(_bins(page.axis(axis)) for axis in range(5)),  # x, y, z, differential
    }


def _bins(axis: MeshAxis) -> tuple[Any, ...]:
    """An axis as values that compare equal when equal (an unused axis has NaN bounds)."""
    bounds = tuple(None if math.isnan(bound) else bound for bound in (axis.min_val, axis.max_val))
    return int(axis.n), bounds, axis.binning, axis.name, axis.unit


def _add(aggregators: list[Aggregator], estimator: Estimator, path: Path, first: Estimator) -> None:
    """Add a task's pages, which must score what the first task's do, over the same bins: numpy
    would spread a single value over every bin (a differential file cut in its axes holds one).
    A task of no primaries simulated nothing (its values per primary are 0/0): left out."""
    name = f"{path.parent.name}/{path.name}"
    if len(estimator.pages) != len(aggregators):
        raise MergeError(
            f"{name} has {len(estimator.pages)} pages where the other tasks have {len(aggregators)}"
        )
    for number, (page, model) in enumerate(zip(estimator.pages, first.pages, strict=True)):
        if np.shape(page.data_raw) != np.shape(model.data_raw):
            raise MergeError(
                f"{name} does not match: {np.shape(page.data_raw)} values where the first "
                f"task has {np.shape(model.data_raw)}"
            )
        mine, theirs = _scoring(page), _scoring(model)
        if differs := [what for what in mine if mine[what] != theirs[what]]:
            raise MergeError(
                f"{name} does not match: page {number} has other {' and '.join(differs)} "
                "than the first task's"
            )
    if estimator.number_of_primaries:
        for page, aggregator in zip(estimator.pages, aggregators, strict=True):
            aggregator.update(value=page.data_raw, weight=estimator.number_of_primaries)


def merge_files(paths: list[Path], sim_type: str, name: str) -> Estimator:
    """One estimator from the same detector's files of several tasks."""
    result = read_file(paths[0], sim_type)
    if len(paths) > 1:
        aggregators = [_aggregator(page) for page in result.pages]
        _add(aggregators, result, paths[0], result)
        for path in paths[1:]:
            current = read_file(path, sim_type)
            _add(aggregators, current, path, result)
            result.number_of_primaries += current.number_of_primaries
        for page, aggregator in zip(result.pages, aggregators, strict=True):
            if result.number_of_primaries:  # else nothing was simulated: the first file stands
                page.data_raw = aggregator.data
            page.error_raw = None
    # These reach the uploaded metadata (estimator_dict takes every attribute), as pymchelper's
    # own merge would set them.
    result.file_counter = len(paths)
    result.file_corename = name
    result.error_type = ErrorEstimate.none
    return result


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).replace('"', "")


def page_dict(page: Page, number: int, estimator_fields: set[str]) -> dict[str, Any]:
    skip = PAGE_NOT_METADATA | estimator_fields
    metadata = {key: _text(value) for key, value in vars(page).items() if key not in skip}
    metadata.setdefault("page_number", str(number))
    result: dict[str, Any] = {
        "metadata": metadata,
        "dimensions": page.dimension,
        "data": {
            "unit": str(page.unit),
            "name": str(page.name),
            "values": np.ravel(page.data_raw).tolist(),
        },
    }
    for axis_number in range(page.dimension):
        axis = page.plot_axis(axis_number)
        result[f"axis_dim{axis_number + 1}"] = {
            "unit": str(axis.unit),
            "name": str(axis.name),
            "values": axis.data.tolist(),
        }
    return result


def estimator_dict(estimator: Estimator, name: str) -> dict[str, Any]:
    """The estimator as `POST /results` takes it (pymchelper's JSON writer's shape + name)."""
    fields = vars(estimator)
    metadata = {key: _text(value) for key, value in fields.items() if key not in NOT_METADATA}
    pages = [page_dict(page, index, set(fields)) for index, page in enumerate(estimator.pages)]
    return {"name": name, "metadata": metadata, "pages": pages}
