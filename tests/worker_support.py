"""Helpers for the worker tests: an app on a real port whose local runner runs the built-in
worker (`python -m server.worker`) against fake simulators, and readers of what it stored."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Config
from tests.conftest import login
from tests.jobs_support import RecordingDispatcher, record_jobs

WORKER_PATHS = ("/tasks", "/jobs", "/results", "/logfiles")


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
