"""Helpers for the job, worker-protocol and runner tests: submissions from the real captured
payloads, a dispatcher wrapper that remembers update keys, and bounded polling."""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.keys import DISPATCHER
from server.runner import Dispatcher, Job
from tests.conftest import FIXTURES

RESULTS_FIXTURE = FIXTURES / "json_with_results.json"


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
