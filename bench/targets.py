"""The targets of issue 5 and the numbers derived from the rows (ceiling ratios, RSS growth).

A row fails its target when a number misses it, and also whenever wrk saw a non-2xx response or
a socket error: a fast error is not a result.
"""

import dataclasses
from typing import Any

CEILING_RATIO = 0.6  # running simulations (issue 5; issue 15 keeps it)
FINISHED_CEILING_RATIO = 0.8  # finished simulations, served from memory (issue 15)
UPLOAD_MS = 40.0
RSS_GROWTH_MIB = 30.0


@dataclasses.dataclass(frozen=True)
class Target:
    min_rps: float | None = None
    max_p99_ms: float | None = None

    def text(self) -> str:
        parts = []
        if self.min_rps is not None:
            parts.append(f">= {self.min_rps:g} req/s")
        if self.max_p99_ms is not None:
            parts.append(f"p99 <= {self.max_p99_ms:g} ms")
        return ", ".join(parts)

    def met(self, row: dict[str, Any]) -> bool:
        if self.min_rps is not None and row["rps"] < self.min_rps:
            return False
        return self.max_p99_ms is None or row["p99_ms"] <= self.max_p99_ms


# (workload, connections) -> target; issue 5 states them for one server process at c=16.
TARGETS = {
    ("results_full_gzip", 16): Target(660, 60),
    ("results_full_identity", 16): Target(220, 60),
    ("results_finished_gzip", 16): Target(660, 60),
    ("results_finished_identity", 16): Target(220, 60),
    ("estimators", 16): Target(1400),
    ("user_simulations", 16): Target(1400),
    ("tasks", 16): Target(1600),
}


def failed(row: dict[str, Any]) -> bool:
    return "error" in row or row["non_2xx"] > 0 or row["socket_errors"] > 0


def verdict(row: dict[str, Any]) -> tuple[str, bool | None]:
    """(target text, met) for a table row; met is None when the row has no target."""
    target = TARGETS.get((row["workload"], row["connections"]))
    text = target.text() if target else ""
    if failed(row):
        return text, False
    return text, target.met(row) if target else None


def mark(met: bool | None, absent: str = "") -> str:
    return {True: "PASS", False: "FAIL", None: absent}[met]


def find(rows: list[dict[str, Any]], name: str, connections: int) -> dict[str, Any] | None:
    for row in rows:
        if row["workload"] == name and row["connections"] == connections:
            return row
    return None


# ratio name -> (our workload, ceiling workload, target at c=16)
RATIOS = {
    "identity": ("results_full_identity", "ceiling_identity", CEILING_RATIO),
    "gzip": ("results_full_gzip", "ceiling_gzip", CEILING_RATIO),
    "finished identity": ("results_finished_identity", "ceiling_identity", FINISHED_CEILING_RATIO),
    "finished gzip": ("results_finished_gzip", "ceiling_gzip", FINISHED_CEILING_RATIO),
}


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[int, float | None]]:
    """Our full-fetch throughput as a fraction of the ceiling's, per encoding and concurrency
    (running simulations; finished ones too when they were measured)."""
    out: dict[str, dict[int, float | None]] = {}
    for name, (workload, bare, _) in RATIOS.items():
        if name.startswith("finished") and not any(r["workload"] == workload for r in rows):
            continue
        out[name] = {}
        for connections in (1, 16):
            ours = find(rows, workload, connections)
            ceiling = find(rows, bare, connections)
            usable = ours and ceiling and not failed(ours) and not failed(ceiling)
            out[name][connections] = ours["rps"] / ceiling["rps"] if usable else None
    return out


def memory(rows: list[dict[str, Any]], idle_mib: float, vmhwm_mib: float) -> dict[str, Any]:
    """RSS under 16 concurrent full fetches, against the idle server after the data was loaded."""
    runs = {}
    for encoding in ("identity", "gzip"):
        row = find(rows, f"results_full_{encoding}", 16)
        if row and "rss_mib" in row:
            runs[encoding] = row["rss_mib"]
    peak = max((run["peak"] for run in runs.values()), default=None)
    growth = peak - idle_mib if peak is not None else None
    return {
        "idle_mib": idle_mib,
        "vmhwm_mib": vmhwm_mib,
        "c16_full_fetch": runs,
        "growth_mib": growth,
    }


def shown(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def check(what: str, target: str, value: str, met: bool | None) -> dict[str, Any]:
    """One target; `met` is None when it was not measured (a workload left out with --only)."""
    return {"what": what, "target": target, "value": value, "met": met}


def row_check(rows: list[dict[str, Any]], name: str, connections: int) -> dict[str, Any]:
    target, row = TARGETS[name, connections], find(rows, name, connections)
    what = f"{name} c={connections}"
    if row is None:
        return check(what, target.text(), "-", None)
    if "rps" not in row:
        return check(what, target.text(), "wrk failed", False)
    value = f"{row['rps']:.0f} req/s, p99 {row['p99_ms']:.1f} ms"
    value += " (with errors)" if failed(row) else ""
    return check(what, target.text(), value, verdict(row)[1] is True)


def checks(
    rows: list[dict[str, Any]], upload: dict[str, Any], mem: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every target of issue 5 with the measured value and whether it is met."""
    found = [row_check(rows, name, connections) for name, connections in TARGETS]
    for name, by_c in ratios(rows).items():
        workload, bare, wanted = RATIOS[name]
        ratio = by_c[16]
        present = find(rows, workload, 16) and find(rows, bare, 16)
        met = (ratio is not None and ratio >= wanted) if present else None
        found.append(check(f"{name} / ceiling c=16", f">= {wanted}", shown(ratio), met))
    p50 = upload.get("p50_ms")
    met = p50 is not None and p50 <= UPLOAD_MS
    found.append(check("upload p50", f"<= {UPLOAD_MS:g} ms", shown(p50, " ms"), met))
    growth = mem["growth_mib"]
    met = growth <= RSS_GROWTH_MIB if growth is not None else None
    found.append(
        check("RSS growth, c=16 full", f"<= {RSS_GROWTH_MIB:g} MiB", shown(growth, " MiB"), met)
    )
    return found
