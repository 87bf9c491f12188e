"""The workloads (what wrk sends, and to which process) and how one of them is measured.

A measurement: one request from Python first (the probe: its status and Content-Encoding say
at once whether the workload is sound), a short wrk warm-up, then the measured wrk run, with the
target's CPU time read from /proc before and after it and its RSS sampled throughout (from before
the warm-up, so that growth during the warm-up counts too).
"""

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat, wrk
from bench.scenario import JSON, Scenario

CONCURRENCIES = (1, 16)
NAMES = (
    "results_full_identity", "results_finished_identity", "ceiling_identity",
    "results_full_gzip", "results_finished_gzip", "ceiling_gzip",
    "results_estimator", "ui_results_pages", "estimators", "user_simulations", "tasks",
    "results_304",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str  # the key in the JSON output
    title: str  # the label in the table
    script: str  # bench/lua/<script>.lua: "paths" (GETs) or "tasks" (POST /tasks)
    args: tuple[str, ...]  # the script's arguments (paths, or ntasks and job ids)
    headers: dict[str, str]
    ceiling: bool = False  # served by the ceiling app instead of the server
    key: str = ""  # the update key of "tasks" (in wrk's environment: wrk.environment)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A process under load: where it listens and which pids to account."""

    url: str
    pid: int
    postgres_pid: int | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    wrk: str
    duration: int
    warmup: int
    scripts: Path  # where the joined Lua scripts are written


def define(scenario: Scenario) -> list[Workload]:
    """Every workload, in the order they run: the full fetches (running simulations, then
    finished ones) right before their ceiling."""
    cookie, gzip = scenario.cookie, {"Accept-Encoding": "gzip"}
    full = tuple(f"/results?job_id={job}" for job in scenario.fetch_jobs)
    finished = tuple(f"/results?job_id={job}" for job in scenario.finished_jobs)
    one = tuple(f"{path}&estimator_name=yz_profile_" for path in full)
    # The same pages as the UI asks for them, through its dialect (top-level `pages`).
    ui_pages = tuple(f"/ui{path}&estimator_name=yz_profile&page_numbers=0-2" for path in full)
    estimators = tuple(f"/estimators?job_id={job}" for job in scenario.fetch_jobs)
    tasks = (str(scenario.ntasks), *scenario.task_jobs)
    not_modified = {**cookie, **gzip, "If-None-Match": scenario.etag or '"none"'}
    completed = (f"/results?job_id={scenario.completed_job}",)
    return [
        Workload("results_full_identity", "GET /results full, identity", "paths", full, cookie),
        Workload(
            "results_finished_identity",
            "GET /results full, identity, COMPLETED",
            "paths",
            finished,
            cookie,
        ),
        Workload("ceiling_identity", "ceiling: same bytes, identity", "paths", full, {}, True),
        Workload("results_full_gzip", "GET /results full, gzip", "paths", full, {**cookie, **gzip}),
        Workload(
            "results_finished_gzip",
            "GET /results full, gzip, COMPLETED",
            "paths",
            finished,
            {**cookie, **gzip},
        ),
        Workload("ceiling_gzip", "ceiling: same bytes, gzip", "paths", full, gzip, True),
        Workload("results_estimator", "GET /results yz_profile_ only", "paths", one, cookie),
        Workload("ui_results_pages", "GET /ui/results yz_profile pages", "paths", ui_pages, cookie),
        Workload("estimators", "GET /estimators", "paths", estimators, cookie),
        Workload(
            "user_simulations", "GET /user/simulations", "paths", ("/user/simulations",), cookie
        ),
        Workload("tasks", "POST /tasks (progress)", "tasks", tasks, {}, key=scenario.update_key),
        Workload("results_304", "GET /results COMPLETED, 304", "paths", completed, not_modified),
    ]


def redacted(headers: dict[str, str]) -> dict[str, str]:
    """Headers fit for the JSON output: no access token (the update key is never recorded)."""
    return {name: "<redacted>" if name == "Cookie" else value for name, value in headers.items()}


async def probe(http: aiohttp.ClientSession, workload: Workload, base_url: str) -> dict[str, Any]:
    """One request as wrk will send it: status, Content-Encoding, and the body if not 2xx."""
    if workload.script == "tasks":
        body = {"simulation_id": workload.args[1], "task_id": 1, "update_key": workload.key}
        body["update_dict"] = {"simulated_primaries": 1}
        request = http.post(base_url + "/tasks", json=body, headers=JSON)
    else:
        # wrk sends no Accept-Encoding unless told to; aiohttp would add "gzip, deflate".
        url, headers = base_url + workload.args[0], workload.headers
        request = http.get(url, headers=headers, skip_auto_headers=("Accept-Encoding",))
    try:
        async with request as response:
            raw = await response.read()
    except aiohttp.ClientError as exc:
        return {"status": None, "content_encoding": None, "body": f"request failed: {exc!r}"}
    found = {
        "status": response.status,
        "content_encoding": response.headers.get("Content-Encoding"),
    }
    if not 200 <= response.status < 400:
        found["body"] = raw[:300].decode(errors="replace")
    return found


async def measure(
    workload: Workload, connections: int, settings: Settings, target: Loaded
) -> dict[str, Any]:
    """One workload at one concurrency: wrk's numbers plus the target's CPU and RSS."""
    script = wrk.write_script(workload.script, settings.scripts)
    common = {"connections": connections, "script": script, "args": list(workload.args)}
    env = wrk.environment(workload.headers, workload.key)
    row: dict[str, Any] = {"workload": workload.name, "title": workload.title}
    row |= {"connections": connections, "headers": redacted(workload.headers)}
    try:
        with procstat.RssSampler(procstat.tree(target.pid)) as rss:
            if settings.warmup:
                warmup = wrk.command(settings.wrk, target.url, duration=settings.warmup, **common)
                await wrk.run(warmup, settings.warmup, env)
            start = procstat.Usage.now(target.pid, target.postgres_pid)
            line = wrk.command(settings.wrk, target.url, duration=settings.duration, **common)
            result = await wrk.run(line, settings.duration, env)
            used = procstat.Usage.now(target.pid, target.postgres_pid) - start
    except wrk.WrkError as exc:
        return {**row, "error": str(exc)}
    row |= {**result.as_dict(), **costs(used, result, target.postgres_pid is not None)}
    return {**row, "rss_mib": {"before": rss.before, "peak": rss.peak, "after": rss.after}}


def costs(used: procstat.Usage, result: wrk.WrkResult, postgres: bool) -> dict[str, float | None]:
    """CPU per request of the target, postgres and wrk; other processes' load in CPUs."""
    per_request = 1000 / result.requests if result.requests else 0.0
    return {
        "cpu_ms_per_req": used.server * per_request,
        "postgres_cpu_ms_per_req": used.postgres * per_request if postgres else None,
        "wrk_cpu_ms_per_req": used.client * per_request,  # the load generator shares the CPUs
        # Everything else running on the machine meanwhile (other users): how noisy it was.
        "other_cpu_cores": used.others / result.duration_s if result.duration_s else None,
    }
