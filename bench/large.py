"""Large results (`bench/run --large`): how uploads and fetches grow with the size of a result.

A generator scales the fixture's estimators to a target size the way real results grow: a finer
mesh (each bin of a page's last axis split into `bins` bins, its values and axis values with
them) and more pages (`copies` of every page, numbered after the originals). The body is written
to a file once and streamed to `POST /results`, so the client's memory does not count. For each
size: the upload (client time, the server's peak RSS during it), then full `GET /results`
identity and gzip one after another (time to first byte, MB/s, server CPU per MB of body), then
4 concurrent fetches of each encoding with the server's RSS sampled throughout. Last, the same
bodies are fetched the same way from the bare in-memory app (bench/ceiling.py): what sending
them costs at best on this machine, size by size. At the end the smallest and the largest are
fetched alternately on one server (paired_growth), for the linearity verdict.

The fetches are made on blocking sockets in threads by bench/client.py, each body read into one
reused buffer: the aiohttp client took as much time per fetch of the 2.6 MB gzip body as the
server (1,250 MB/s against 2,100 with http.client, the server's CPU per MB the same), and
http.client itself ~0.1 ms a fetch (its parse of the headers), so their figures were partly
the client's. wrk, the client of the other workloads, reads large bodies slowly.
"""

import asyncio
import dataclasses
import math
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import orjson

from bench import client, paired, procstat
from bench.procstat import Usage
from bench.scenario import JSON, RESULTS_FILE, Scenario, expect

SIZES_MB = (8, 80, 400)
AXES = ("axis_dim1", "axis_dim2", "axis_dim3")
READ_CHUNK = 1 << 20  # the upload's pieces
CONCURRENT = 4
MEASURED_S = 1.0
PAIRED_ROUNDS = 6
PAIR = ("smallest", "largest")  # the sizes paired_growth compares


@dataclasses.dataclass(frozen=True)
class Scale:
    bins: int  # each bin of the last axis becomes this many
    copies: int  # every page appears this many times (new page numbers)


def scale_for(target_bytes: int, fixture_bytes: int) -> Scale:
    """About `target_bytes` of JSON: half of the growth from finer bins, half from more pages."""
    factor = max(target_bytes / fixture_bytes, 1.0)
    bins = max(round(math.sqrt(factor)), 1)
    return Scale(bins, max(round(factor / bins), 1))


def _finer(values: list[Any], bins: int) -> list[Any]:
    """Each value split into `bins` slightly different ones (not repeats: they would compress
    far better than real data)."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out += [value] * bins
        elif isinstance(value, int):
            out += [value + k for k in range(bins)]
        else:
            out += [value * (1 + k / 997) for k in range(bins)]
    return out


def _finer_axis(values: list[float], bins: int) -> list[float]:
    """Axis values with `bins` points per original step."""
    if len(values) < 2:
        return [float(value) for value in values] * bins
    out = []
    for i, value in enumerate(values):
        step = (values[i + 1] if i + 1 < len(values) else value + value - values[i - 1]) - value
        out += [value + step * k / bins for k in range(bins)]
    return out


def scaled_page(page: dict[str, Any], bins: int, number: int) -> dict[str, Any]:
    """`page` with `bins` times the bins along its last axis, numbered `number`."""
    page = {**page}
    last = next((axis for axis in reversed(AXES) if isinstance(page.get(axis), dict)), None)
    if last is not None:
        page[last] = {**page[last], "values": _finer_axis(page[last]["values"], bins)}
    if isinstance(page.get("data"), dict) and isinstance(page["data"].get("values"), list):
        page["data"] = {**page["data"], "values": _finer(page["data"]["values"], bins)}
    if isinstance(page.get("metadata"), dict):
        page["metadata"] = {**page["metadata"], "page_number": str(number)}
    else:
        page["page_number"] = number
    return page


def _number(page: dict[str, Any]) -> int:
    metadata = page.get("metadata")
    return int(metadata["page_number"] if isinstance(metadata, dict) else page["page_number"])


def estimator_chunks(estimators: list[dict[str, Any]], scale: Scale) -> Iterator[bytes]:
    """The JSON of the scaled `estimators` list, a page at a time."""
    yield b"["
    for e_index, estimator in enumerate(estimators):
        pages = estimator["pages"]
        stride = max((_number(page) for page in pages), default=0) + 1
        yield (b"," if e_index else b"") + b'{"name":' + orjson.dumps(estimator["name"])
        yield b',"pages":['
        for copy in range(scale.copies):
            for p_index, page in enumerate(pages):
                number = _number(page) + copy * stride
                comma = b"," if copy or p_index else b""
                yield comma + orjson.dumps(scaled_page(page, scale.bins, number))
        yield b"]}"
    yield b"]"


def write_body(path: Path, job_id: str, key: str, target_bytes: int) -> dict[str, Any]:
    """The upload body for `job_id` in `path`, about `target_bytes` long; its scale and size."""
    estimators = orjson.loads(RESULTS_FILE.read_bytes())["estimators"]
    scale = scale_for(target_bytes, len(orjson.dumps(estimators)))
    with path.open("wb") as out:
        out.write(orjson.dumps({"simulation_id": job_id, "update_key": key})[:-1])
        out.write(b',"estimators":')
        for chunk in estimator_chunks(estimators, scale):
            out.write(chunk)
        out.write(b"}")
    return {"bins": scale.bins, "copies": scale.copies, "body_bytes": path.stat().st_size}


async def _file_chunks(path: Path) -> Any:
    with path.open("rb") as source:
        while chunk := source.read(READ_CHUNK):
            yield chunk


async def upload(
    http: aiohttp.ClientSession, base: str, path: Path, server_pid: int
) -> dict[str, Any]:
    """POST /results streamed from `path`: client seconds, the server's RSS around it, and the
    slowest answer to another request meanwhile (`GET /` one after another: how long the
    upload kept the server from everyone else)."""
    stop = threading.Event()
    pinging = asyncio.create_task(asyncio.to_thread(_ping, base, stop))
    try:
        with procstat.RssSampler(procstat.tree(server_pid), 0.02) as rss:
            started = time.perf_counter()
            async with http.post("/results", data=_file_chunks(path), headers=JSON) as response:
                await expect(response, 202, "POST /results (large)")
            seconds = time.perf_counter() - started
    finally:
        stop.set()
        slowest = await pinging
    measured = {"seconds": seconds, "rss_before_mib": rss.before, "rss_peak_mib": rss.peak}
    return measured | {"others_slowest_ms": slowest}


def _ping(base: str, stop: threading.Event) -> float:
    """`GET /` one after another (5 ms apart) until `stop`: the slowest, in ms. Blocking."""
    connection, slowest = client.Connection(base), 0.0
    request = connection.request("/", {})
    try:
        while not stop.wait(0.005):
            slowest = max(slowest, connection.fetch(request)["seconds"] * 1000)
        return slowest
    finally:
        connection.close()


def fetches(
    base: str,
    path: str,
    headers: dict[str, str],
    seconds: float = 0.0,
    out: BinaryIO | None = None,
) -> list[dict[str, Any]]:
    """Fetches one after another on a connection of its own (bench/client.py): one (its body
    written to `out` if given), or at least 3 and for at least `seconds`. Blocking."""
    connection = client.Connection(base)
    request = connection.request(path, headers)
    started = time.perf_counter()
    try:
        runs = [connection.fetch(request, out)]
        while seconds and (len(runs) < 3 or time.perf_counter() - started < seconds):
            runs.append(connection.fetch(request))
        return runs
    finally:
        connection.close()


async def timed_fetch(
    base: str, path: str, headers: dict[str, str], pids: tuple[int, int | None]
) -> dict[str, Any]:
    """A first fetch (of a fresh server: its time to first byte counts, as the slowest), then
    fetches one after another for MEASURED_S (so that CPU time read in clock ticks is
    precise): median TTFB, MB/s and server CPU per MB over them."""
    first = await asyncio.to_thread(fetches, base, path, headers)
    start = Usage.now(*pids)
    runs = await asyncio.to_thread(fetches, base, path, headers, MEASURED_S)
    used = Usage.now(*pids) - start
    mb = sum(run["bytes"] for run in runs) / 1e6
    return {
        "fetches": len(runs),
        "bytes": runs[0]["bytes"],
        "first_ttfb_ms": first[0]["ttfb_ms"],
        "ttfb_ms": statistics.median(run["ttfb_ms"] for run in runs),
        "ttfb_max_ms": max(run["ttfb_ms"] for run in first + runs),
        "mb_per_s": mb_per_s(runs),
        "server_cpu_ms_per_mb": used.server * 1000 / mb if mb else None,
        "postgres_cpu_ms_per_mb": used.postgres * 1000 / mb if mb and pids[1] else None,
    }


def mb_per_s(runs: list[dict[str, Any]]) -> float:
    return sum(run["bytes"] for run in runs) / 1e6 / sum(run["seconds"] for run in runs)


async def paired_growth(base: str, data: Scenario, jobs: tuple[str, str]) -> dict[str, Any]:
    """Largest / smallest MB/s measured again on one server, in pairs as bench/paired.py
    measures the ceiling ratios: PAIRED_ROUNDS rounds of fetches of each size for MEASURED_S
    (the smallest first, then the largest first, and so on), so that drift of the machine's
    speed falls on both sizes of a round alike; per encoding, the median of the rounds' ratios
    and their range."""
    found = {}
    paths = {size: f"/results?job_id={job}" for size, job in zip(PAIR, jobs, strict=True)}
    for encoding in ("identity", "gzip"):
        headers = {**data.cookie, "Accept-Encoding": encoding}
        for path in paths.values():  # not a fresh server's first fetch
            await asyncio.to_thread(fetches, base, path, headers)
        rounds = [await _round(base, paths, headers, number) for number in range(PAIRED_ROUNDS)]
        found[encoding] = paired.summary(rounds, "largest", "smallest")
    return found


async def _round(
    base: str, paths: dict[str, str], headers: dict[str, str], number: int
) -> dict[str, float | None]:
    order = list(paths.items())
    rates: dict[str, float | None] = {}
    for size, path in order if number % 2 == 0 else reversed(order):
        rates[size] = mb_per_s(await asyncio.to_thread(fetches, base, path, headers, MEASURED_S))
    return rates


async def concurrent_rss(
    base: str, path: str, headers: dict[str, str], server_pid: int
) -> dict[str, Any]:
    """CONCURRENT fetches at once; the server's RSS growth over its RSS just before."""
    with procstat.RssSampler(procstat.tree(server_pid), 0.02) as rss:
        started = time.perf_counter()
        runs = await asyncio.gather(
            *(asyncio.to_thread(fetches, base, path, headers) for _ in range(CONCURRENT))
        )
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mb_per_s": sum(run[0]["bytes"] for run in runs) / 1e6 / seconds,
        "rss_before_mib": rss.before,
        "rss_peak_mib": rss.peak,
        "rss_growth_mib": rss.peak - rss.before,
    }


async def upload_size(
    http: aiohttp.ClientSession,
    base: str,
    data: Scenario,
    job_id: str,
    megabytes: int,
    workdir: Path,
    server_pid: int,
) -> dict[str, Any]:
    """Make a result of about `megabytes` MB and upload it to `job_id`: the row of that size."""
    body = workdir / f"large-{megabytes}.json"
    made = write_body(body, job_id, data.update_key, megabytes * 1_000_000)
    try:
        return {
            "target_mb": megabytes,
            **made,
            "upload": await upload(http, base, body, server_pid),
        }
    finally:
        body.unlink()


async def fetch_size(
    base: str, data: Scenario, job_id: str, row: dict[str, Any], pids: tuple[int, int | None]
) -> None:
    """Fetch `job_id` full, identity then gzip, one at a time then CONCURRENT at once; the
    numbers go into `row`."""
    path = f"/results?job_id={job_id}"
    for encoding in ("identity", "gzip"):
        headers = {**data.cookie, "Accept-Encoding": encoding}
        row[encoding] = await timed_fetch(base, path, headers, pids)
        row[encoding]["concurrent"] = await concurrent_rss(base, path, headers, pids[0])


async def save_bodies(base: str, data: Scenario, job_id: str, workdir: Path) -> tuple[Path, Path]:
    """The full body of `job_id`, identity and gzip as sent, written to files (for the
    ceiling)."""
    found = []
    for encoding in ("identity", "gzip"):
        headers = {**data.cookie, "Accept-Encoding": encoding}
        target = workdir / f"large-body.{encoding}"
        with target.open("wb") as out:
            await asyncio.to_thread(fetches, base, f"/results?job_id={job_id}", headers, out=out)
        found.append(target)
    return found[0], found[1]


async def fetch_ceiling(base: str, row: dict[str, Any], pid: int) -> None:
    """The ceiling's fetches of the same bodies, one after another as ours: `row["ceiling"]`."""
    row["ceiling"] = {
        encoding: await timed_fetch(base, "/results", {"Accept-Encoding": encoding}, (pid, None))
        for encoding in ("identity", "gzip")
    }


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the per-MB figures of the largest size compare with the smallest (1.0: linear)."""
    if len(rows) < 2:
        return {}
    small, large = rows[0], rows[-1]
    out: dict[str, Any] = {}
    for encoding in ("identity", "gzip"):
        out[f"{encoding}_mb_per_s_ratio"] = (
            large[encoding]["mb_per_s"] / small[encoding]["mb_per_s"]
        )
        cpu_small, cpu_large = (row[encoding]["server_cpu_ms_per_mb"] for row in (small, large))
        out[f"{encoding}_cpu_per_mb_ratio"] = cpu_large / cpu_small if cpu_small else None
        if "ceiling" in small and "ceiling" in large:
            bare = [row["ceiling"][encoding]["mb_per_s"] for row in (small, large)]
            out[f"ceiling_{encoding}_mb_per_s_ratio"] = bare[1] / bare[0]
    upload_rate = [row["body_bytes"] / row["upload"]["seconds"] for row in (small, large)]
    out["upload_mb_per_s_ratio"] = upload_rate[1] / upload_rate[0]
    return out
