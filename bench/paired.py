"""Ceiling ratios measured in pairs of short windows, for the verdicts on them.

The table's rows are one long window per workload, a few windows apart from their ceiling. On a
shared machine the speed of everything drifts between those windows: the ceiling alone was seen
to serve 6,900 and 9,200 req/s in runs minutes apart, with nothing else running. So for each
ratio with a target, our workload and its ceiling also run alternately, in ROUNDS rounds of one
short window each (ours then the ceiling, then the other way round), and the ratio is the median
of the rounds' ratios: drift falls on both sides of each round alike.
"""

import dataclasses
import statistics
from typing import Any

from bench import targets
from bench.workloads import Loaded, Settings, Workload, measure

ROUNDS = 6
WINDOW_S = 2
CONNECTIONS = 16


async def paired_ratios(
    workloads: list[Workload], settings: Settings, ours: Loaded, ceiling: Loaded
) -> dict[str, dict[str, Any]]:
    """Every ratio of targets.RATIOS whose two workloads are in `workloads`, paired."""
    by_name = {workload.name: workload for workload in workloads}
    short = dataclasses.replace(settings, duration=min(WINDOW_S, settings.duration), warmup=0)
    out = {}
    for name, (mine, bare, _) in targets.RATIOS.items():
        if mine in by_name and bare in by_name:
            pair = ((by_name[mine], ours), (by_name[bare], ceiling))
            out[name] = summary(await rounds(pair, short))
    return out


async def rounds(
    pair: tuple[tuple[Workload, Loaded], tuple[Workload, Loaded]], settings: Settings
) -> list[dict[str, float | None]]:
    """ROUNDS rounds of (ours, ceiling) req/s, the order swapped every other round."""
    found = []
    for number in range(ROUNDS):
        rps: dict[bool, float | None] = {}
        for workload, target in pair if number % 2 == 0 else reversed(pair):
            row = await measure(workload, CONNECTIONS, settings, target)
            rps[workload.ceiling] = None if "rps" not in row or targets.failed(row) else row["rps"]
        found.append({"ours": rps[False], "ceiling": rps[True]})
    return found


def summary(
    measured: list[dict[str, float | None]], top: str = "ours", bottom: str = "ceiling"
) -> dict[str, Any]:
    """The rounds with the median, lowest and highest of their ratios `top` / `bottom` (None
    without any)."""
    ratios = [r[top] / r[bottom] for r in measured if r[top] and r[bottom]]
    if not ratios:
        return {"rounds": measured, "ratio": None, "low": None, "high": None}
    low, high = min(ratios), max(ratios)
    return {"rounds": measured, "ratio": statistics.median(ratios), "low": low, "high": high}
