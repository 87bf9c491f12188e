"""Helpers shared by the tests: accounts, submissions from the real captured payloads, known
update keys, worker-protocol steps, apps on real ports with a runner, bounded polling, and
small editor projects in the shape the web UI sends (for the converter's tests).

Fixtures live in conftest.py; fake programs (simulators, a stand-in worker) in tests/fakes/.
"""

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Config
from server.database import db
from server.keys import DISPATCHER
from server.runner import Dispatcher, Job

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_WORKER = FAKES / "worker.py"
RESULTS_FIXTURE = FIXTURES / "json_with_results.json"
EDITOR = "json_payload_editor.json"
SHIELDHIT_FILES = "shieldhit_json_payload_files.json"
FLUKA_FILES = "fluka_json_payload_files.json"
KEY = "test-update-key"
WORKER_PATHS = ("/tasks", "/jobs", "/results", "/logfiles")


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


RESULTS = read_json(RESULTS_FIXTURE)


@contextlib.contextmanager
def server_tmp_dir() -> Iterator[Path]:
    """A temporary directory for an embedded PostgreSQL, outside pytest's tmp_path tree.

    As root, the server runs as the user `pgserver`, which must be able to reach its data
    directory; but every pytest session that starts (any worktree's) makes /tmp/pytest-of-root
    private again (mode 0700), which cut a running server off its files mid-session.
    """
    with tempfile.TemporaryDirectory(prefix="yaptide-test-") as directory:
        yield Path(directory)


async def migrated(url: str) -> None:
    """Bring the database at `url` up to date (as the server does at start)."""
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()


# accounts


async def register(
    client: TestClient, username: str = "alice", password: str = "password1"
) -> None:
    response = await client.put("/auth/register", json={"username": username, "password": password})
    assert response.status == 201, await response.text()


async def login(client: TestClient, username: str = "alice", password: str = "password1") -> Any:
    """Register and log in; the client's cookie jar then holds the tokens."""
    await register(client, username, password)
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status == 202, await response.text()
    return await response.json()


# submissions, status and the worker protocol


def payload(name: str = SHIELDHIT_FILES, **changes: Any) -> dict[str, Any]:
    """A real captured submission body, with some fields changed."""
    return {**read_json(FIXTURES / name), **changes}


class RecordingDispatcher:
    """Wraps the configured dispatcher, remembering every job (with its update key)."""

    def __init__(self) -> None:
        self.inner: Dispatcher | None = None
        self.jobs: dict[str, Job] = {}
        self.canceled: list[str] = []

    async def submit(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        await self.inner.submit(job)

    async def cancel(self, job_id: str) -> None:
        self.canceled.append(job_id)
        await self.inner.cancel(job_id)

    def key(self, job_id: str) -> str:
        return self.jobs[job_id].update_key


def record_jobs(app: web.Application) -> RecordingDispatcher:
    """Install a RecordingDispatcher around the app's dispatcher once it starts."""
    recorder = RecordingDispatcher()

    async def wrap(app: web.Application) -> AsyncIterator[None]:
        recorder.inner = app[DISPATCHER]
        app[DISPATCHER] = recorder
        yield

    app.cleanup_ctx.append(wrap)
    return recorder


async def worker_setup(
    aiohttp_client: Callable, make_config: Callable[..., Config]
) -> tuple[TestClient, RecordingDispatcher, dict[str, str]]:
    """A logged-in client, the dispatcher recorder, and a 4-task job's worker identity."""
    app = create_app(make_config())
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    job_id = await submit(client)
    return client, recorder, {"simulation_id": job_id, "update_key": recorder.key(job_id)}


async def start_local(
    aiohttp_server: Callable,
    aiohttp_client: Callable,
    ports: Callable[[], int],
    make_config: Callable[..., Config],
    mode: str,
    user: str = "alice",
    **runner: Any,
) -> tuple[TestClient, RecordingDispatcher, Config]:
    """An app on a real port whose local runner runs `fake_worker.py <mode>`, and its client
    logged in as `user`. Workers reach it at [server] public_url (YAPTIDE_URL)."""
    port = ports()
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_WORKER))} {mode}"
    config = make_config(
        server={"public_url": f"http://127.0.0.1:{port}"},
        runner={"kind": "local", "command": command, "grace_period": 0.5, **runner},
    )
    app = create_app(config)
    recorder = record_jobs(app)
    client = await aiohttp_client(await aiohttp_server(app, port=port))
    await login(client, user)
    return client, recorder, config


async def submit(
    client: TestClient, body: str | dict[str, Any] = SHIELDHIT_FILES, **changes: Any
) -> str:
    """Submit a captured payload (by file name) or a body, with some fields changed; the job_id."""
    sent = payload(body) if isinstance(body, str) else body
    response = await client.post("/jobs/direct", json={**sent, **changes})
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def status(client: TestClient, job_id: str) -> dict:
    response = await client.get("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200, await response.text()
    return await response.json()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll `check` every 50 ms until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return result


async def lock_waiters(conn: Any) -> int:
    """How many backends wait on a lock (one the test holds, as a rule)."""
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    return int(await conn.fetchval(waiting))


async def lock_waiters_are(conn: Any, count: int) -> bool:
    return await lock_waiters(conn) == count


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job_dir_of(config: Config, job_id: str) -> Path:
    return config.data_dir / "jobs" / job_id


def states_are(
    client: TestClient, job_id: str, job_state: str, task_state: str | None = None
) -> Callable[[], Awaitable[dict | None]]:
    """A check for `eventually`: the status body once the job (and every task) is in a state."""

    async def check() -> dict | None:
        body = await status(client, job_id)
        tasks_ok = task_state is None or all(
            task["task_state"] == task_state for task in body["job_tasks_status"]
        )
        return body if body["job_state"] == job_state and tasks_ok else None

    return check


async def logfiles_of(conn: Any) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, content FROM logfiles ORDER BY name")
    return {row["name"]: row["content"] for row in rows}


async def wait_gone(pids: list[int]) -> None:
    async def gone() -> bool:
        return not any(pid_alive(pid) for pid in pids)

    await eventually(gone, timeout=10)


def processes_of(job_id: str) -> list[int]:
    """The live processes whose environment names the job (its workers, their simulators and
    children, and in the runner's sandbox its bwraps), as this host numbers them: in the
    sandbox, the pids that workers record are the sandbox's own."""
    marker = f"\0YAPTIDE_SIMULATION_ID={job_id}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile; a zombie's environment is empty
            if entry.name.isdigit() and marker in b"\0" + (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def pids_of(job_dir: Path, tasks: range) -> list[int]:
    return [int((job_dir / f"pid_{n}").read_text()) for n in tasks]


async def post(client: TestClient, path: str, body: dict, status: int = 202) -> dict:
    response = await client.post(path, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def set_task(client: TestClient, identity: dict, task_id: int, **update: Any) -> None:
    body = {**identity, "task_id": task_id, "update_dict": update}
    assert await post(client, "/tasks", body) == {"message": "Task updated"}


async def tasks_of(conn: Any) -> list[tuple]:
    rows = await conn.fetch("SELECT task_id, task_state FROM tasks ORDER BY task_id")
    return [tuple(row) for row in rows]


async def job_of(conn: Any) -> tuple[str, bool]:
    row = await conn.fetchrow("SELECT job_state, end_time IS NOT NULL AS ended FROM simulations")
    return row["job_state"], row["ended"]


# results and stored rows


def page_number(page: dict[str, Any]) -> int:
    return int(page["metadata"]["page_number"])


def reference(
    estimator: str | None = None, numbers: set[int] | None = None
) -> list[dict[str, Any]]:
    """The fixture's estimators as GET /results should return them, filtered like the server."""
    out = []
    for entry in RESULTS["estimators"]:
        if estimator is not None and entry["name"] != estimator:
            continue
        pages = sorted(entry["pages"], key=page_number)
        if numbers is not None:
            pages = [page for page in pages if page_number(page) in numbers]
        if pages:
            out.append({**entry, "pages": pages})  # estimator fields round-trip too
    return out


def raw_results_body(job_id: str, estimators: bytes) -> bytes:
    """A `POST /results` body around `estimators` (raw JSON text, which may be broken on purpose)."""
    return b'{"simulation_id": "%s", "update_key": "%s", "estimators": [%s]}' % (
        job_id.encode(),
        KEY.encode(),
        estimators,
    )


async def answer(client, job_id: str, encoding: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (but Date) and body of a full GET /results, as sent."""
    response = await client.get(
        "/results",
        params={"job_id": job_id},
        headers={"Accept-Encoding": encoding},
        auto_decompress=False,
    )
    body = await response.read()
    return response.status, {k: v for k, v in response.headers.items() if k != "Date"}, body


async def upload_pages(client, job_id: str, pages: list[dict]) -> int:
    """POST /results of one estimator "z" of `pages`, streamed (bodies of any size); the status."""
    body = {
        "simulation_id": job_id,
        "update_key": KEY,
        "estimators": [{"name": "z", "pages": pages}],
    }
    response = await client.post("/results", data=io.BytesIO(orjson.dumps(body)))
    return response.status


async def set_key(conn, job_id: str, key: str = KEY) -> None:
    """Workers get the key from the dispatcher; tests give the job a known one."""
    digest = hashlib.sha256(key.encode()).digest()
    await conn.execute(
        "UPDATE simulations SET update_key_sha256 = $2 WHERE job_id = $1", job_id, digest
    )


async def upload(client, job_id: str, estimators: list | None = None, key: str = KEY):
    body = {"simulation_id": job_id, "update_key": key, "estimators": estimators}
    if estimators is None:
        body["estimators"] = RESULTS["estimators"]
    return await client.post("/results", data=orjson.dumps(body))


def utc(text: str) -> datetime:
    """`2024-01-15T10:00:00Z` as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def set_simulation(conn: asyncpg.Connection, job_id: str, **values: Any) -> None:
    """Set listed columns (title, job_state, start_time, end_time, platform, ntasks)."""
    row = dict(await conn.fetchrow("SELECT * FROM simulations WHERE job_id = $1", job_id))
    row.update(values)
    await conn.execute(
        "UPDATE simulations SET title = $2, job_state = $3, start_time = $4, end_time = $5,"
        " platform = $6, ntasks = $7 WHERE job_id = $1",
        job_id,
        row["title"],
        row["job_state"],
        row["start_time"],
        row["end_time"],
        row["platform"],
        row["ntasks"],
    )


async def switch_user(client: TestClient, username: str) -> None:
    """Log the client in as `username` (registered on first use)."""
    body = {"username": username, "password": "password1"}
    response = await client.post("/auth/login", json=body)
    if response.status == 401:
        await login(client, username)
    else:
        assert response.status == 202, await response.text()


async def stored_counts(conn: asyncpg.Connection, job_id: str) -> dict[str, int]:
    """How many rows of each kind a simulation has (0 everywhere once it is deleted)."""
    return dict(
        await conn.fetchrow(
            """
            WITH s AS (SELECT id FROM simulations WHERE job_id = $1)
            SELECT (SELECT count(*) FROM s) AS simulations,
                   (SELECT count(*) FROM tasks WHERE simulation_id IN (SELECT id FROM s)) AS tasks,
                   (SELECT count(*) FROM inputs WHERE simulation_id IN (SELECT id FROM s))
                       AS inputs,
                   (SELECT count(*) FROM estimators WHERE simulation_id IN (SELECT id FROM s))
                       AS estimators,
                   (SELECT count(*) FROM pages p JOIN estimators e ON e.id = p.estimator_id
                    WHERE e.simulation_id IN (SELECT id FROM s)) AS pages,
                   (SELECT count(*) FROM logfiles WHERE simulation_id IN (SELECT id FROM s))
                       AS logfiles
            """,
            job_id,
        )
    )


async def add_results_and_logs(client: TestClient, conn: asyncpg.Connection, job_id: str) -> None:
    """Store an estimator with two pages (through `POST /results`) and two log files."""
    await set_key(conn, job_id)
    pages = [
        {"page_number": n, "name": name, "data": {"values": [1, 2]}}
        for n, name in [(0, "z"), (1, "y")]
    ]
    body = {
        "simulation_id": job_id,
        "update_key": KEY,
        "estimators": [{"name": "dose", "pages": pages}],
    }
    response = await client.post("/results", json=body)
    assert response.status == 202, await response.text()
    await add_logfiles(client, job_id, {"shieldhit_0001.log": "ok\n", "simulation.log": "done"})


async def add_logfiles(client: TestClient, job_id: str, logfiles: dict[str, str]) -> None:
    """Store log files through `POST /logfiles` (the job must have the key KEY: set_key)."""
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": logfiles}
    data = io.BytesIO(orjson.dumps(body))  # streamed: a log may be tens of MB
    response = await client.post(
        "/logfiles", data=data, headers={"Content-Type": "application/json"}
    )
    assert response.status == 202, await response.text()


# the built-in worker on a real port


class Unavailable:
    """A middleware answering 503 to the first `count` worker requests (a server in trouble)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.refused = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method == "POST" and request.path in WORKER_PATHS and self.left > 0:
            self.left -= 1
            self.refused += 1
            await request.read()
            return web.json_response({"message": "Service Unavailable"}, status=503)
        return await handler(request)


async def start_worker_app(
    aiohttp_server: Callable,
    aiohttp_client: Callable,
    port: int,
    make_config: Callable[..., Config],
    simulators: dict[str, str],
    middleware: Unavailable | None = None,
    **runner: Any,
) -> tuple[TestClient, RecordingDispatcher, Config]:
    """The app with the built-in worker (progress every 0.1 s, retries for at most 30 s)."""
    settings = {"kind": "local", "grace_period": 0.5, "progress_interval": 0.1}
    config = make_config(
        server={"public_url": f"http://127.0.0.1:{port}"},
        runner={**settings, "retry_timeout": 30.0, **runner},
        simulators=simulators,
    )
    app = create_app(config)
    if middleware is not None:
        app.middlewares.append(middleware.middleware)
    recorder = record_jobs(app)
    client = await aiohttp_client(await aiohttp_server(app, port=port))
    await login(client)
    return client, recorder, config


async def results_of(client: TestClient, job_id: str) -> dict[str, Any]:
    response = await client.get("/results", params={"job_id": job_id})
    assert response.status == 200, await response.text()
    return await response.json()


def page_means(results: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(estimator, page name) -> the mean of the page's values."""
    means = {}
    for estimator in results["estimators"]:
        for page in estimator["pages"]:
            values = page["data"]["values"]
            means[estimator["name"], page["data"]["name"]] = sum(values) / len(values)
    return means


def seen_by_simulator(job_dir: Path, task_id: int) -> dict[str, Any]:
    return json.loads((job_dir / f"sim_{task_id}.json").read_text())


async def task_and_job_ends(conn: Any) -> tuple[float, str]:
    """Seconds from the last task's end to the job's end, and the job state."""
    row = await conn.fetchrow(
        "SELECT s.job_state, extract(epoch FROM s.end_time - max(t.end_time)) AS delay "
        "FROM simulations s JOIN tasks t ON t.simulation_id = s.id GROUP BY s.id"
    )
    return float(row["delay"]), row["job_state"]


# Copies of one run merge to that run: the means of tests/fixtures/shieldhit/mesh2d/ex_yzmsh.bdo's
# pages (pymchelper 2.9.6), the reference of every SLURM run of fakes.simulators.fake_shieldhit.
MESH_MEANS = {
    ("ex_yzmsh", "DOSE"): 1.0845853219400103,
    ("ex_yzmsh", "TLET"): 12.263980173543953,
    ("ex_yzmsh", "ZONE"): 1.0,
}


async def slurm_ids(conn: Any, timeout: float = 30.0) -> tuple[int, int]:
    """(array job id, merge job id) of the one simulation sent to SLURM, once its submission
    (in the background, after the POST answered) stored them."""
    query = "SELECT array_job_id, merge_job_id FROM slurm_jobs"
    row = await eventually(lambda: conn.fetchrow(query), timeout)
    return row["array_job_id"], row["merge_job_id"]


def submissions_ended(conn: Any, count: int = 1) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: `count` simulations' SLURM submissions (in the background)
    ended, each with its ids stored (slurm_jobs) or the log `slurm` saying why not."""

    async def check() -> bool:
        ended = await conn.fetchval(
            "SELECT count(*) FROM simulations s"
            " WHERE EXISTS (SELECT 1 FROM slurm_jobs j WHERE j.simulation_id = s.id)"
            " OR EXISTS (SELECT 1 FROM logfiles l"
            " WHERE l.simulation_id = s.id AND l.name = 'slurm')"
        )
        return ended >= count

    return check


def slurm_states(cluster: Any, *job_ids: int) -> Callable[[], Awaitable[dict[str, str] | None]]:
    """A check for `eventually`: {job: state} from squeue (tests/slurm/cluster.py Cluster) once
    none of the jobs is pending, running or completing."""

    async def check() -> dict[str, str] | None:
        text = cluster.command("squeue", "-h", "--array", "-t", "all", "-o", "%i %T")
        states = {}
        for line in text.splitlines():
            job, state = line.split()
            if int(job.split("_")[0]) in job_ids:
                states[job] = state
        alive = {"PENDING", "RUNNING", "COMPLETING"}
        return states if states and not alive & set(states.values()) else None

    return check


# The user seed's `GET /clusters` example response (configured with conftest.SEED_CLUSTER).
SEED_CLUSTERS_RESPONSE = {
    "message": "Available clusters",
    "clusters": [
        {"cluster_name": "prometheus", "display_name": "Prometheus (Cyfronet)", "available": True}
    ],
}


def running_simulators(job_dir: Path) -> Callable[[], Awaitable[list[int] | None]]:
    """A check for `eventually`: the pids of a job's hanging fake simulators (fakes.simulators,
    hang=True) once two of them run (the SLURM test node has 2 CPUs)."""

    async def check() -> list[int] | None:
        pids = [int(path.read_text()) for path in job_dir.glob("simpid_*")]
        started = list(job_dir.glob("simrunning_*"))
        return pids if len(started) >= 2 and all(pid_alive(p) for p in pids) else None

    return check


@contextlib.contextmanager
def small_filesystem(size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on a new directory (outside pytest's tmp_path, see
    server_tmp_dir), unmounted after. Root only: tests using it skip otherwise (AS_ROOT)."""
    with tempfile.TemporaryDirectory(prefix="yaptide-disk-") as directory:
        options = f"size={size},mode=0755"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", directory], check=True)
        try:
            yield Path(directory)
        finally:
            subprocess.run(["umount", "-l", directory], check=True)


def fill(directory: Path) -> Path:
    """A file in `directory` written until its file system is full; remove it to free the space."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(bytes(1 << 16))
    return filler
