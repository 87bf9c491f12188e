"""`GET /jobs/direct`, `GET /jobs` and `DELETE /jobs/direct` (api.md "Submission and status")."""

import re

import pytest

from server.app import create_app
from tests.helpers import login, payload, record_jobs, status, submit

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
async def app_client(aiohttp_client, make_config, conn):
    """A client (logged in as alice) of an app whose dispatcher remembers the update keys."""
    app = create_app(make_config())
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    return client, recorder


def pending_task(task_id: int, requested: int) -> dict:
    return {
        "task_id": task_id,
        "task_state": "PENDING",
        "simulated_primaries": 0,
        "requested_primaries": requested,
        "estimated_time": None,
        "start_time": None,
        "end_time": None,
    }


@pytest.mark.parametrize("path", ["/jobs/direct", "/jobs"])
async def test_status_of_a_new_job(app_client, path):
    client, _ = app_client
    job_id = await submit(client, payload(ntasks=3))
    response = await client.get(path, params={"job_id": job_id})
    assert response.status == 200
    # NSTAT 10000 in beam.dat, split over 3 tasks: the remainder goes to the first task.
    assert await response.json() == {
        "message": "Job status",
        "job_state": "PENDING",
        "job_tasks_status": [pending_task(1, 3334), pending_task(2, 3333), pending_task(3, 3333)],
    }


async def test_status_follows_worker_updates(app_client):
    client, recorder = app_client
    job_id = await submit(client, payload(ntasks=2))
    worker = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
    update = {"task_state": "RUNNING", "simulated_primaries": 100, "estimated_time": 12}
    response = await client.post("/tasks", json={**worker, "task_id": 2, "update_dict": update})
    assert response.status == 202
    body = await status(client, job_id)
    assert body["job_state"] == "RUNNING"
    first, second = body["job_tasks_status"]
    assert first == pending_task(1, 5000)
    assert ISO.match(second.pop("start_time"))
    assert second == {
        "task_id": 2,
        "task_state": "RUNNING",
        "simulated_primaries": 100,
        "requested_primaries": 5000,
        "estimated_time": 12,
        "end_time": None,
    }


async def test_status_errors(app_client, aiohttp_client, make_config):
    client, _ = app_client
    job_id = await submit(client)
    response = await client.get("/jobs/direct")
    assert (response.status, await response.json()) == (400, {"message": "Missing job_id"})
    response = await client.get("/jobs", params={"job_id": "nope"})
    assert (response.status, await response.json()) == (404, {"message": "Simulation not found"})
    other = await aiohttp_client(create_app(make_config()))
    await login(other, "bob")
    response = await other.get("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        403,
        {"message": "Simulation belongs to another user"},
    )
    anonymous = await aiohttp_client(create_app(make_config()))
    response = await anonymous.get("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})


async def test_cancel(app_client, conn):
    client, recorder = app_client
    job_id = await submit(client, payload(ntasks=3))
    worker = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
    for task_id, state in [(1, "RUNNING"), (1, "COMPLETED"), (2, "RUNNING")]:
        body = {**worker, "task_id": task_id, "update_dict": {"task_state": state}}
        assert (await client.post("/tasks", json=body)).status == 202

    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Job cancelled"})
    assert recorder.canceled == [job_id]
    job = await conn.fetchrow("SELECT job_state, end_time FROM simulations")
    assert job["job_state"] == "CANCELED" and job["end_time"] is not None
    rows = await conn.fetch(
        "SELECT task_id, task_state, end_time IS NOT NULL AS ended FROM tasks ORDER BY task_id"
    )
    assert [tuple(row) for row in rows] == [
        (1, "COMPLETED", True),
        (2, "CANCELED", True),
        (3, "CANCELED", True),
    ]
    # The update key is dead now, and a second cancel is a conflict.
    body = {**worker, "task_id": 2, "update_dict": {"task_state": "COMPLETED"}}
    response = await client.post("/tasks", json=body)
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is CANCELED: no more updates are accepted"},
    )
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is already CANCELED"},
    )
    assert recorder.canceled == [job_id]


async def test_cancel_errors(app_client, aiohttp_client, make_config, conn):
    client, recorder = app_client
    job_id = await submit(client)
    response = await client.delete("/jobs/direct")
    assert (response.status, await response.json()) == (400, {"message": "Missing job_id"})
    response = await client.delete("/jobs/direct", params={"job_id": "nope"})
    assert (response.status, await response.json()) == (404, {"message": "Simulation not found"})
    other = await aiohttp_client(create_app(make_config()))
    await login(other, "bob")
    response = await other.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        403,
        {"message": "Simulation belongs to another user"},
    )
    assert await conn.fetchval("SELECT job_state FROM simulations") == "PENDING"
    assert await conn.fetchval("SELECT count(*) FROM tasks WHERE task_state = 'PENDING'") == 4
    assert recorder.canceled == []


async def test_cancel_a_finished_job(app_client, conn):
    client, recorder = app_client
    job_id = await submit(client, payload(ntasks=1))
    worker = {"simulation_id": job_id, "update_key": recorder.key(job_id), "task_id": 1}
    for state in ("RUNNING", "FAILED"):
        response = await client.post(
            "/tasks", json={**worker, "update_dict": {"task_state": state}}
        )
        assert response.status == 202
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert (response.status, await response.json()) == (
        409,
        {"message": "Simulation is already FAILED"},
    )
    assert await conn.fetchval("SELECT job_state FROM simulations") == "FAILED"
