"""The data set, made through the real API (and bench/db.py for what only a dispatcher knows).

- `fetch_jobs` (`--simulations`, default 4): results uploaded once (untimed, warming the server
  up); their tasks stay PENDING, so the job is not terminal and has no ETag: no 304s. (The
  server's in-memory caches still serve repeated fetches unless `--cold` turns them off.)
- `task_jobs` (`--uploads`, default 12): each receives one timed `POST /results` of the fixture
  (the upload workload); then their tasks are set RUNNING once through `POST /tasks` and take
  the progress updates of the `POST /tasks` workload.
- `completed_job`: results uploaded, then marked COMPLETED in the database, for the ETag/304
  workload.
- `finished_jobs` (as many as `fetch_jobs`): the same, fetched in full by the "finished"
  workloads (served from memory, with no query, once cached).
"""

import dataclasses
import json
import secrets
import statistics
import time
from typing import Any

import aiohttp
import orjson

from bench import db
from bench.procstat import Usage
from bench.server import REPO

FIXTURES = REPO / "tests" / "fixtures"
RESULTS_FILE = FIXTURES / "json_with_results.json"
SUBMISSION_FILE = FIXTURES / "shieldhit_json_payload_files.json"
USERNAME, PASSWORD = "bench", "bench-password"
JSON = {"Content-Type": "application/json"}


class SetupError(Exception):
    """The data set could not be made: nothing can be measured."""


@dataclasses.dataclass
class Scenario:
    token: str
    update_key: str
    ntasks: int
    fetch_jobs: list[str]
    task_jobs: list[str]
    completed_job: str
    etag: str | None = None
    finished_jobs: list[str] = dataclasses.field(default_factory=list)
    upload: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"access_token={self.token}"}


def session(base_url: str) -> aiohttp.ClientSession:
    """A client that sends cookies only when told to (the jar would refuse 127.0.0.1 anyway)."""
    return aiohttp.ClientSession(base_url, cookie_jar=aiohttp.DummyCookieJar())


async def expect(response: aiohttp.ClientResponse, status: int, what: str) -> bytes:
    body = await response.read()
    if response.status != status:
        raise SetupError(f"{what}: expected {status}, got {response.status} {body[:300]!r}")
    return body


async def login(http: aiohttp.ClientSession) -> str:
    """Register the benchmark user and log in; the access token from the cookie."""
    account = {"username": USERNAME, "password": PASSWORD}
    async with http.put("/auth/register", json=account) as response:
        await expect(response, 201, "PUT /auth/register")
    async with http.post("/auth/login", json=account) as response:
        await expect(response, 202, "POST /auth/login")
        return response.cookies["access_token"].value


async def submit(http: aiohttp.ClientSession, cookie: dict[str, str], count: int) -> list[str]:
    payload = SUBMISSION_FILE.read_bytes()
    jobs = []
    for _ in range(count):
        async with http.post("/jobs/direct", data=payload, headers={**cookie, **JSON}) as response:
            jobs.append(orjson.loads(await expect(response, 202, "POST /jobs/direct"))["job_id"])
    return jobs


def worker_json(value: Any) -> bytes:
    """JSON as a Python worker sends it (requests' `json=` is json.dumps with its defaults):
    about 0.9 MB for the fixture's estimators (the file itself is pretty-printed, 2.5 MB)."""
    return json.dumps(value).encode()


def upload_body(job_id: str, key: str, estimators: bytes) -> bytes:
    """The worker's body, spliced around the fixture's estimators (serialised once)."""
    head = orjson.dumps({"simulation_id": job_id, "update_key": key})
    return head[:-1] + b',"estimators":' + estimators + b"}"


async def upload(http: aiohttp.ClientSession, body: bytes) -> float:
    """POST /results; the client-observed seconds from sending to the whole answer."""
    started = time.perf_counter()
    async with http.post("/results", data=body, headers=JSON) as response:
        await expect(response, 202, "POST /results")
    return time.perf_counter() - started


async def timed_uploads(
    http: aiohttp.ClientSession, bodies: list[bytes], pids: tuple[int, int | None]
) -> dict[str, Any]:
    """The upload workload: sequential uploads, client times, server CPU per upload.

    `pids`: the server's and postgres' (None when postgres is not ours to watch)."""
    start = Usage.now(*pids)
    times = [await upload(http, body) for body in bodies]
    used = Usage.now(*pids) - start
    ms = sorted(t * 1000 for t in times)
    return {
        "count": len(ms),
        "body_bytes": len(bodies[0]),
        "times_ms": ms,
        "p50_ms": statistics.median(ms),
        "p90_ms": statistics.quantiles(ms, n=10, method="inclusive")[-1],
        "server_cpu_ms": used.server * 1000 / len(ms),
        "postgres_cpu_ms": used.postgres * 1000 / len(ms) if pids[1] else None,
    }


async def start_tasks(http: aiohttp.ClientSession, scenario: Scenario) -> None:
    """Every task of the task jobs turns RUNNING once (a note, not a stop, if that fails)."""
    for job_id in scenario.task_jobs:
        for task_id in range(1, scenario.ntasks + 1):
            body = {"simulation_id": job_id, "task_id": task_id, "update_key": scenario.update_key}
            body["update_dict"] = {"task_state": "RUNNING"}
            async with http.post("/tasks", json=body) as response:
                if response.status != 202:
                    text = (await response.read())[:200]
                    scenario.notes.append(
                        f"setup: POST /tasks (task -> RUNNING) answered {response.status} {text!r}:"
                        " the POST /tasks workload will fail"
                    )
                    return


def submission_ntasks() -> int:
    """How many tasks each submitted simulation has."""
    ntasks: int = orjson.loads(SUBMISSION_FILE.read_bytes())["ntasks"]
    return ntasks


async def finish(http: aiohttp.ClientSession, scenario: Scenario, job_id: str) -> None:
    """Finish `job_id` as its worker would: every task RUNNING, then COMPLETED (`POST /tasks`;
    with results stored, the simulation is then COMPLETED)."""
    for state in ("RUNNING", "COMPLETED"):
        for task_id in range(1, scenario.ntasks + 1):
            body = {"simulation_id": job_id, "task_id": task_id, "update_key": scenario.update_key}
            body["update_dict"] = {"task_state": state}
            async with http.post("/tasks", json=body) as response:
                await expect(response, 202, f"POST /tasks (task -> {state})")


async def fetch_etag(http: aiohttp.ClientSession, scenario: Scenario) -> None:
    path = f"/results?job_id={scenario.completed_job}"
    headers = {**scenario.cookie, "Accept-Encoding": "gzip"}
    async with http.get(path, headers=headers) as response:
        await response.read()
        scenario.etag = response.headers.get("ETag")
    if scenario.etag is None:
        scenario.notes.append("setup: no ETag on a COMPLETED simulation's GET /results")


async def build(
    http: aiohttp.ClientSession,
    database_url: str,
    pids: tuple[int, int | None],
    fetch: int,
    uploads: int,
) -> Scenario:
    """The whole data set; `pids` (server, postgres) are watched during the timed uploads."""
    token = await login(http)
    cookie = {"Cookie": f"access_token={token}"}
    jobs = await submit(http, cookie, fetch + uploads + 1 + fetch)
    key = secrets.token_urlsafe(32)
    await db.set_update_keys(database_url, jobs, key)
    ntasks = submission_ntasks()
    finished, jobs = jobs[-fetch:], jobs[:-fetch]
    scenario = Scenario(token, key, ntasks, jobs[:fetch], jobs[fetch:-1], jobs[-1])
    scenario.finished_jobs = finished
    estimators = worker_json(orjson.loads(RESULTS_FILE.read_bytes())["estimators"])
    for job_id in [*scenario.fetch_jobs, scenario.completed_job, *finished]:
        await upload(http, upload_body(job_id, key, estimators))
    for job_id in finished:
        await db.mark_completed(database_url, job_id)
    bodies = [upload_body(job_id, key, estimators) for job_id in scenario.task_jobs]
    scenario.upload = await timed_uploads(http, bodies, pids)
    await db.mark_completed(database_url, scenario.completed_job)
    await start_tasks(http, scenario)
    await fetch_etag(http, scenario)
    return scenario


async def response_sizes(http: aiohttp.ClientSession, data: Scenario) -> dict[str, Any]:
    """The full result as our server sends it, identity and gzip."""
    path, sizes = f"/results?job_id={data.fetch_jobs[0]}", {}
    for encoding in ("identity", "gzip"):
        headers = {**data.cookie, "Accept-Encoding": encoding}
        async with http.get(path, headers=headers, auto_decompress=False) as response:
            body = await expect(response, 200, f"GET /results ({encoding})")
        sizes[encoding] = body
    return sizes
