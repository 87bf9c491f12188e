"""`python -m bench`: the benchmark of issue 5 in one command (options: `python -m bench -h`).

It starts a PostgreSQL (embedded, in a temporary directory; or DATABASE_URL), the server
(`python run.py`) and the ceiling app (bench/ceiling.py) as separate processes, makes the data
through the real API (bench/scenario.py), runs every workload with wrk at concurrency 1 and 16
(bench/workloads.py), prints a Markdown table and writes bench/out/results-<time>.json.
Progress goes to stderr, the report to stdout.
"""

import argparse
import asyncio
import contextlib
import gzip
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench import db, large, procstat, report, scenario, server, targets, wrk
from bench.paired import paired_ratios
from bench.workloads import (
    CONCURRENCIES,
    NAMES,
    Loaded,
    Settings,
    Workload,
    define,
    measure,
    probe,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The benchmark of issue 5: server, data, wrk load, ceiling, table and JSON.",
        epilog=f"Workloads: {', '.join(NAMES)}.",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run (5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run (1)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 s runs")
    parser.add_argument("--workers", type=int, default=1, help="server processes (1)")
    parser.add_argument("--simulations", type=int, default=4, help="simulations read (4)")
    parser.add_argument("--uploads", type=int, default=12, help="timed uploads, >= 10 (12)")
    parser.add_argument("--only", help="comma-separated workloads (default: all of them)")
    parser.add_argument(
        "--cold", action="store_true", help="turn the server's caches off (*_cache_size = 0)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra server configuration, e.g. YAPTIDE_DATABASE_POOL_SIZE=20 (repeatable)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="instead of the workloads: large results, uploads and fetches by size (bench/large.py)",
    )
    parser.add_argument(
        "--large-sizes",
        default=",".join(map(str, large.SIZES_MB)),
        help="MB of JSON per large result (8,80,400)",
    )
    parser.add_argument("--out", type=Path, default=report.OUT, help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(NAMES) if args.only else set()
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.quick:
        args.duration, args.warmup = 1, 1
    if any("=" not in pair for pair in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    args.env = server.cache_off_env() if args.cold else {}
    try:
        args.sizes = tuple(int(size) for size in args.large_sizes.split(","))
    except ValueError:
        parser.error("--large-sizes takes comma-separated whole MB, e.g. 8,80,400")
    if args.large:  # the upload must fit the worker body limit (256 MiB by default)
        limit = max(args.sizes) * 2_000_000 + (64 << 20)
        args.env["YAPTIDE_SERVER_WORKER_MAX_BODY_SIZE"] = str(limit)
    args.env |= dict(pair.split("=", 1) for pair in args.server_env)
    if args.uploads < 10 or args.simulations < 1 or args.workers < 1 or args.duration < 1:
        parser.error("need --uploads >= 10, --simulations >= 1, --workers >= 1, --duration >= 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def probe_notes(workload: Workload, found: dict[str, Any]) -> list[str]:
    """What the one Python request showed to be wrong with a workload."""
    status = found["status"]
    if workload.name == "results_304":
        sound = status == 304
    else:
        sound = status is not None and 200 <= status < 300
    if not sound:
        answer = f"answered {status}" if status else "failed"
        return [f"{workload.name}: a single request {answer}: {found.get('body', '')}"]
    wanted = workload.headers.get("Accept-Encoding") if status == 200 else None
    if found["content_encoding"] != wanted:
        return [f"{workload.name}: Content-Encoding {found['content_encoding']}, wanted {wanted}"]
    return []


def row_notes(row: dict[str, Any]) -> list[str]:
    where = f"{row['workload']} c={row['connections']}"
    if "error" in row:
        return [f"{where}: {row['error']}"]
    if row["non_2xx"] or row["socket_errors"]:
        return [
            f"{where}: {row['non_2xx']} non-2xx responses and {row['socket_errors']} socket "
            f"errors out of {row['requests']} requests"
        ]
    return []


async def run_workloads(
    workloads: list[Workload], settings: Settings, ours: Loaded, ceiling: Loaded
) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for workload in workloads:
            target = ceiling if workload.ceiling else ours
            found = await probe(http, workload, target.url)
            notes += probe_notes(workload, found)
            for connections in CONCURRENCIES:
                log(f"  {workload.title}, c={connections}")
                row = await measure(workload, connections, settings, target)
                rows.append({**row, "probe": found})
                notes += row_notes(row)
    return rows, notes


async def measure_server(
    args: argparse.Namespace, workdir: Path, url: str, pgdata: Path | None
) -> dict[str, Any]:
    """Everything that needs the server: data, ceiling, workloads, memory."""
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    with server.running(server.start_server(url, port, workdir, args.workers, args.env)) as process:
        await process.wait_ready(base + "/")
        listening = await server.wait_workers(process, port, args.workers)
        postmaster = procstat.find_postmaster(pgdata) if pgdata else None
        ours = Loaded(base, process.pid, postmaster)
        log(f"server up on {base} ({listening} listening process(es)); loading the data")
        async with scenario.session(base) as http:
            pids = (process.pid, postmaster)
            data = await scenario.build(http, url, pids, args.simulations, args.uploads)
            bodies = await scenario.response_sizes(http, data)
        identity, gzipped = workdir / "identity.json", workdir / "identity.json.gz"
        # The ceiling serves exactly our bodies, so that the ratio is the serving overhead alone.
        # (Until issue 15 its gzip was gzip -6 of the identity body, about 7 % smaller than our
        # page segments at ISA-L level 1: a compression difference, reported below as a size.)
        identity.write_bytes(bodies["identity"])
        gzipped.write_bytes(bodies["gzip"])
        ceiling_port = server.free_port()
        ceiling_base = f"http://127.0.0.1:{ceiling_port}"
        with server.running(server.start_ceiling(ceiling_port, identity, gzipped, workdir)) as bare:
            await bare.wait_ready(ceiling_base + "/")
            workloads = define(data)
            if args.only:
                workloads = [w for w in workloads if w.name in args.only.split(",")]
            settings = Settings(wrk.ensure_wrk(), args.duration, args.warmup, workdir)
            idle = procstat.total_mib(procstat.tree(process.pid))
            log("running the workloads")
            ceiling = Loaded(ceiling_base, bare.pid)
            rows, notes = await run_workloads(workloads, settings, ours, ceiling)
            paired = {}
            if not args.cold:  # the ratios' verdicts are for warm fetches
                log("the ceiling ratios again, in pairs of short windows")
                paired = await paired_ratios(workloads, settings, ours, ceiling)
        vmhwm = procstat.total_mib(procstat.tree(process.pid), "VmHWM")
        if process.popen.poll() is not None:
            notes.append(f"the server exited during the run (status {process.popen.returncode})")
    return {
        "server": {
            "workers": args.workers,
            "listening_processes": listening,
            "postgres": "DATABASE_URL" if pgdata is None else "embedded",
            "postgres_cpu_accounted": postmaster is not None,
        },
        "sizes": {
            "identity_bytes": len(bodies["identity"]),
            "gzip_bytes": len(bodies["gzip"]),
            "gzip6_bytes": len(gzip.compress(bodies["identity"], compresslevel=6)),
        },
        "rows": rows,
        "paired": paired,
        "upload": data.upload,
        "memory": targets.memory(rows, idle, vmhwm),
        "notes": data.notes + notes,
    }


async def measure_large(
    args: argparse.Namespace, workdir: Path, url: str, pgdata: Path | None
) -> dict[str, Any]:
    """The large-results part: the uploads on one server, each simulation then finished as its
    worker would, then the fetches of each size on a freshly started server (so that its memory
    is not the uploads' high-water mark)."""
    postmaster = procstat.find_postmaster(pgdata) if pgdata else None
    async with large_server(args, workdir, url) as (http, base, pid):
        token = await scenario.login(http)
        jobs = await scenario.submit(http, {"Cookie": f"access_token={token}"}, len(args.sizes))
        key = secrets.token_urlsafe(32)
        await db.set_update_keys(url, jobs, key)
        data = scenario.Scenario(token, key, scenario.submission_ntasks(), [], [], "")
        log(f"large results: uploading {', '.join(f'{mb} MB' for mb in args.sizes)}")
        rows = []
        for job_id, megabytes in zip(jobs, args.sizes, strict=True):
            row = await large.upload_size(http, base, data, job_id, megabytes, workdir, pid)
            rows.append(row)
            await scenario.finish(http, data, job_id)
    for row, job_id in zip(rows, jobs, strict=True):
        log(f"large results: fetching {row['target_mb']} MB on a fresh server")
        async with large_server(args, workdir, url) as (_, base, pid):
            await large.fetch_size(base, data, job_id, row, (pid, postmaster))
            bodies = await large.save_bodies(base, data, job_id, workdir)
        log(f"large results: the same {row['target_mb']} MB from the ceiling")
        async with ceiling_server(bodies, workdir) as (base, pid):
            await large.fetch_ceiling(base, row, pid)
        for body in bodies:
            body.unlink()
    paired: dict[str, Any] = {}
    if len(rows) > 1:
        log("large results: the smallest and the largest again, in pairs of windows")
        async with large_server(args, workdir, url) as (_, base, _):
            paired = await large.paired_growth(base, data, (jobs[0], jobs[-1]))
    return {
        "large": rows,
        "growth": large.growth(rows),
        "paired_growth": paired,
        "checks": targets.large_checks(rows, paired),
        "rows": [],
        "notes": [],
    }


@contextlib.asynccontextmanager
async def large_server(
    args: argparse.Namespace, workdir: Path, url: str
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, int]]:
    """A server of its own for part of the large-results run, a client of it, its base URL and
    pid."""
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    with server.running(server.start_server(url, port, workdir, args.workers, args.env)) as process:
        await process.wait_ready(base + "/")
        async with scenario.session(base) as http:
            yield http, base, process.pid


@contextlib.asynccontextmanager
async def ceiling_server(
    bodies: tuple[Path, Path], workdir: Path
) -> AsyncIterator[tuple[str, int]]:
    """The bare app (bench/ceiling.py) serving `bodies` (identity, gzip): its base URL and
    pid."""
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    with server.running(server.start_ceiling(port, *bodies, workdir)) as process:
        await process.wait_ready(base + "/")
        yield base, process.pid


async def run(args: argparse.Namespace) -> dict[str, Any]:
    info = report.machine()
    settings = {k: getattr(args, k) for k in ("duration", "warmup", "workers", "simulations")}
    settings |= {"uploads": args.uploads, "quick": args.quick, "only": args.only}
    settings |= {"cold": args.cold, "server_env": args.env, "large": args.large}
    workdir = Path(tempfile.mkdtemp(prefix="yaptide-bench-"))
    os.chmod(workdir, 0o755)  # the embedded postgres runs as an unprivileged user
    try:
        with server.database(workdir) as (url, pgdata):
            if args.large:
                large_part = await measure_large(args, workdir, url, pgdata)
                return {
                    **large_part,
                    "machine": info,
                    "settings": settings,
                    "loadavg_end": os.getloadavg(),
                }
            measured = await measure_server(args, workdir, url, pgdata)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = measured["rows"]
    for row in rows:
        row["cold"] = args.cold
    measured["ratios"] = targets.ratios(rows)
    measured["checks"] = targets.checks(
        rows, measured["upload"], measured["memory"], args.cold, measured["paired"]
    )
    return {"machine": info, "settings": settings, **measured, "loadavg_end": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [str(f) for f in (scenario.RESULTS_FILE, scenario.SUBMISSION_FILE) if not f.exists()]
    if missing:
        log(f"benchmark failed: fixtures not found: {', '.join(missing)} (tests/fixtures)")
        return 1
    try:
        wrk.ensure_wrk()  # before anything starts: installing it may take a while
        result = asyncio.run(run(args))
    except (server.StartError, scenario.SetupError, wrk.WrkError) as exc:
        log(f"benchmark failed: {exc}")
        return 1
    print(report.large_markdown(result) if args.large else report.markdown(result))
    log(f"\nwritten: {report.write_json(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
