"""Helpers for the job, worker-protocol and runner tests: submissions from the real captured
payloads, a dispatcher wrapper that remembers update keys, and bounded polling."""

import asyncio
import json
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Config
from server.keys import DISPATCHER
from server.runner import Dispatcher, Job
from tests.conftest import FIXTURES, login

RESULTS_FIXTURE = FIXTURES / "json_with_results.json"
FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


def payload(name: str = "shieldhit_json_payload_files.json", **changes: Any) -> dict:
    """A real captured submission body, with some fields changed."""
    return {**json.loads((FIXTURES / name).read_text()), **changes}


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


async def submit(client: TestClient, body: dict | None = None) -> str:
    response = await client.post("/jobs/direct", json=body or payload())
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


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
