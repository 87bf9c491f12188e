"""The report: a Markdown table on stdout and every number in bench/out/results-<time>.json."""

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench import targets
from bench.server import REPO

OUT = Path(__file__).resolve().parent / "out"
COLUMNS = (
    "workload", "c", "req/s", "p50 ms", "p90 ms", "p99 ms", "server CPU ms/req",
    "postgres CPU ms/req", "non-2xx", "sock err", "target", "",
)  # fmt: skip


def machine() -> dict[str, Any]:
    """Where and on what the numbers were measured."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "loadavg_start": os.getloadavg(),
    }


def describe_server_env(settings: dict[str, Any]) -> str:
    """Which server configuration was measured: its caches matter most."""
    caches = "caches OFF (--cold)" if settings.get("cold") else "caches on, as configured"
    pairs = ", ".join(f"{name}={value}" for name, value in settings.get("server_env", {}).items())
    return f"Server: {caches}" + (f"; environment {pairs}." if pairs else ".")


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_row(row: dict[str, Any]) -> str:
    text, met = targets.verdict(row)
    head = [row["title"], str(row["connections"])]
    if "error" in row:
        return line([*head, *["-"] * 8, text, "FAIL (wrk failed, see notes)"])
    rps = row["rps"]
    cells = [number(rps, 0 if rps >= 100 else 1)]
    cells += [number(row[f"{p}_ms"], 2) for p in ("p50", "p90", "p99")]
    cells += [number(row["cpu_ms_per_req"], 2), number(row["postgres_cpu_ms_per_req"], 2)]
    cells += [str(row["non_2xx"]), str(row["socket_errors"])]
    verdict = "FAIL (errors, see notes)" if targets.failed(row) else targets.mark(met)
    return line([*head, *cells, text, verdict])


def upload_row(upload: dict[str, Any]) -> str:
    size = upload["body_bytes"] / 1e6
    title = f"POST /results upload ({upload['count']} sequential, {size:.1f} MB, client time)"
    met = upload["p50_ms"] <= targets.UPLOAD_MS
    cells = ["-", number(upload["p50_ms"], 2), number(upload["p90_ms"], 2), "-"]
    cells += [number(upload["server_cpu_ms"], 2), number(upload["postgres_cpu_ms"], 2), "0", "0"]
    return line([title, "1", *cells, f"p50 <= {targets.UPLOAD_MS:g} ms", targets.mark(met)])


def other_load(rows: list[dict[str, Any]], nproc: int) -> str:
    """How much of the machine other processes took while we measured (a noise gauge)."""
    loads = [row["other_cpu_cores"] for row in rows if row.get("other_cpu_cores") is not None]
    if not loads:
        return "Other processes' CPU during the runs: not measured."
    mean = sum(loads) / len(loads)
    return (
        f"Other processes (not server, postgres or wrk) used {mean:.2f} of {nproc} CPUs on "
        f"average during the measured runs (min {min(loads):.2f}, max {max(loads):.2f})."
    )


def ratio_lines(
    ratios: dict[str, dict[int, float | None]],
    checks: dict[str, dict[str, Any]],
    paired: dict[str, dict[str, Any]],
) -> list[str]:
    """The ratios of the table's rows, and of the paired windows (bench/paired.py), which the
    verdict is on when they were measured."""
    head = ["our full fetch / ceiling", "c=1", "c=16", "c=16 paired: median (range)"]
    out = [line([*head, "target (c=16)", ""]), line(["---"] * 6)]
    for name, by_c in ratios.items():
        check = checks[f"{name} / ceiling c=16"]
        verdict = targets.mark(check["met"], "not measured" if check["value"] == "-" else "-")
        pair = paired.get(name, {})
        spread = f" ({pair['low']:.2f}-{pair['high']:.2f})" if pair.get("ratio") else ""
        cells = [number(by_c[1], 2), number(by_c[16], 2), number(pair.get("ratio"), 2) + spread]
        out.append(line([name, *cells, check["target"], verdict]))
    return out


def memory_text(memory: dict[str, Any], met: bool | None) -> str:
    runs = ", ".join(
        f"{encoding} {run['before']:.1f} -> peak {run['peak']:.1f} (after {run['after']:.1f})"
        for encoding, run in memory["c16_full_fetch"].items()
    )
    growth = memory["growth_mib"]
    return (
        f"Server memory (RSS of the server processes, MiB): peak over the run (VmHWM) "
        f"{memory['vmhwm_mib']:.1f}; idle after loading the data {memory['idle_mib']:.1f}; "
        f"16 concurrent full fetches (from before the warm-up): {runs or '-'}. "
        f"Growth over idle: {number(growth)} MiB (target <= {targets.RSS_GROWTH_MIB:g} MiB): "
        f"{targets.mark(met, 'not measured')}"
    )


def markdown(report: dict[str, Any]) -> str:
    info, settings = report["machine"], report["settings"]
    commit = info["git_commit"][:10] + (" (uncommitted changes)" if info["git_dirty"] else "")
    met = {check["what"]: check["met"] for check in report["checks"]}
    measured = [value for value in met.values() if value is not None]
    parts = [
        f"Benchmark {info['date']}: {info['cpu_model']}, {info['nproc']} CPUs, "
        f"server workers N={settings['workers']}, commit {commit}",
        "",
        f"wrk {settings['duration']} s per run after a {settings['warmup']} s warm-up "
        f"(c=1: -t1 -c1; c=16: -t2 -c16); load average at start "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg_start'])}, at end "
        f"{' '.join(f'{x:.2f}' for x in report['loadavg_end'])}. {describe_server_env(settings)}",
        "",
        line(list(COLUMNS)),
        line(["---"] * len(COLUMNS)),
        *[table_row(row) for row in report["rows"]],
    ]
    if report["upload"]:
        parts.append(upload_row(report["upload"]))
    sizes = report["sizes"]
    parts += ["", other_load(report["rows"], report["machine"]["nproc"])]
    parts += [
        "",
        f"Full result: {sizes['identity_bytes']:,} bytes identity; our gzip "
        f"{sizes['gzip_bytes']:,} bytes (the ceiling serves both as they are); "
        f"gzip -6 of the whole body would be {sizes['gzip6_bytes']:,}.",
        "",
        *ratio_lines(
            report["ratios"],
            {check["what"]: check for check in report["checks"]},
            report.get("paired", {}),
        ),
        "",
        memory_text(report["memory"], met["RSS growth, c=16 full"]),
        "",
    ]
    summary = f"Targets of issues 5 and 15 met: {sum(measured)} of {len(measured)}"
    skipped = len(met) - len(measured)
    what = "not measured or warm only" if settings.get("cold") else "not measured"
    parts.append(summary + (f" ({skipped} {what})." if skipped else "."))
    if report["notes"]:
        parts += ["", "Notes:", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(parts)


def write_json(report: dict[str, Any], out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["machine"]["date"].replace(":", "").replace("-", "")
    path = out / f"results-{stamp}.json"
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    path.write_bytes(orjson.dumps(report, option=options) + b"\n")
    return path


LARGE_COLUMNS = (
    "JSON MB", "bins x pages", "upload s", "upload MB/s", "upload peak RSS MiB",
    "others' slowest answer during upload ms",
    "identity TTFB ms", "identity MB/s", "identity CPU ms/MB", "gzip TTFB ms", "gzip MB/s",
    "gzip CPU ms/MB", "RSS growth 4 x identity MiB", "RSS growth 4 x gzip MiB",
)  # fmt: skip


def large_row(row: dict[str, Any]) -> str:
    upload, identity, gzip = row["upload"], row["identity"], row["gzip"]
    mb = row["body_bytes"] / 1e6
    cells = [number(mb), f"x{row['bins']} x {row['copies']}", number(upload["seconds"], 2)]
    cells += [number(mb / upload["seconds"]), number(upload["rss_peak_mib"], 0)]
    cells.append(number(upload.get("others_slowest_ms")))  # (runs from before it have none)
    for fetched in (identity, gzip):
        cells += [number(fetched["ttfb_ms"]), number(fetched["mb_per_s"])]
        cells.append(number(fetched["server_cpu_ms_per_mb"], 2))
    cells += [number(identity["concurrent"]["rss_growth_mib"])]
    cells += [number(gzip["concurrent"]["rss_growth_mib"])]
    return line(cells)


CEILING_COLUMNS = (
    "JSON MB", "identity MB/s, ceiling", "identity, ours / ceiling", "gzip MB/s, ceiling",
    "gzip, ours / ceiling",
)  # fmt: skip


def ceiling_row(row: dict[str, Any]) -> str:
    cells = [number(row["body_bytes"] / 1e6)]
    for encoding in ("identity", "gzip"):
        bare = row["ceiling"][encoding]["mb_per_s"]
        cells += [number(bare), number(row[encoding]["mb_per_s"] / bare, 2)]
    return line(cells)


def ceiling_part(rows: list[dict[str, Any]]) -> list[str]:
    """The same bodies from the bare app, by size (runs from before it have none)."""
    rows = [row for row in rows if "ceiling" in row]
    if not rows:
        return []
    return [
        "",
        "The same bodies from the bare in-memory app (bench/ceiling.py: `web.Response(body=...)`, "
        "which joins headers and body into one buffer before Python 3.12), fetched the same way:",
        "",
        line(list(CEILING_COLUMNS)),
        line(["---"] * len(CEILING_COLUMNS)),
        *[ceiling_row(row) for row in rows],
    ]


def large_markdown(report: dict[str, Any]) -> str:
    """The scaling table of `bench/run --large`, and how the largest compares with the smallest."""
    info = report["machine"]
    commit = info["git_commit"][:10] + (" (uncommitted changes)" if info["git_dirty"] else "")
    parts = [
        f"Large results {info['date']}: {info['cpu_model']}, {info['nproc']} CPUs, commit "
        f"{commit}; load average at start {' '.join(f'{x:.2f}' for x in info['loadavg_start'])}, "
        f"at end {' '.join(f'{x:.2f}' for x in report['loadavg_end'])}.",
        "",
        "Upload: one streamed POST /results (client time; the server's peak RSS during it). "
        "Fetches: one full GET /results of the COMPLETED simulation (TTFB, MB/s of the body as "
        "sent, server CPU per MB sent), then 4 at once (the server's RSS growth during them).",
        "",
        line(list(LARGE_COLUMNS)),
        line(["---"] * len(LARGE_COLUMNS)),
        *[large_row(row) for row in report["large"]],
        *ceiling_part(report["large"]),
    ]
    if report["growth"]:
        ratios = ", ".join(f"{name} {number(value, 2)}" for name, value in report["growth"].items())
        parts += ["", f"Largest / smallest (1.00: cost linear in size): {ratios}."]
    if report.get("paired_growth"):
        parts += ["", paired_growth_text(report["paired_growth"])]
    if report.get("checks"):
        parts += ["", line(["target (issue 15)", "wanted", "measured", ""]), line(["---"] * 4)]
        parts += [
            line([c["what"], c["target"], c["value"], targets.mark(c["met"], "-")])
            for c in report["checks"]
        ]
    return "\n".join(parts)


def paired_growth_text(paired: dict[str, dict[str, Any]]) -> str:
    """The largest / smallest MB/s measured in pairs of windows on one server."""
    found = [
        f"{encoding} {number(pair['ratio'], 2)} ({number(pair['low'], 2)}-"
        f"{number(pair['high'], 2)})"
        for encoding, pair in paired.items()
    ]
    return (
        "Largest / smallest MB/s in pairs (the two sizes fetched alternately on one server, "
        f"{len(next(iter(paired.values()))['rounds'])} rounds; median (range), the targets' "
        f"measure): {', '.join(found)}."
    )
