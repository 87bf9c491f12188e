"""`POST /tasks` (api.md "Worker-facing endpoints"): validation, transitions, the job state
recomputed from the tasks, and concurrent updates that must never be lost."""

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest

from server.app import create_app
from tests.helpers import (
    job_of,
    login,
    payload,
    post,
    record_jobs,
    set_task,
    submit,
    tasks_of,
)


@pytest.mark.parametrize("before", [[], ["RUNNING"]], ids=["fresh", "running"])
async def test_seed_example(worker, conn, before):
    """The seed's `POST /tasks`, exactly as written: on a RUNNING task, and on a fresh one (a
    worker may report only a task's end; that was 409 `cannot go from PENDING to COMPLETED`)."""
    client, _, identity = worker
    for state in before:
        await set_task(client, identity, 1, task_state=state)
    body = {
        "simulation_id": identity["simulation_id"],
        "task_id": 1,
        "update_key": identity["update_key"],
        "update_dict": {
            "task_state": "COMPLETED",
            "simulated_primaries": 1000,
            "requested_primaries": 1000,
        },
    }
    assert await post(client, "/tasks", body) == {"message": "Task updated"}
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert (row["task_state"], row["simulated_primaries"], row["requested_primaries"]) == (
        "COMPLETED",
        1000,
        1000,
    )
    assert row["start_time"] <= row["end_time"]
    assert await job_of(conn) == ("RUNNING", False)


async def test_late_progress_does_not_change_an_ended_task(worker, conn):
    """A progress report that arrives after the task's end (sent before it, delivered late or
    retried) must not rewrite what the end reported."""
    client, _, identity = worker
    await set_task(client, identity, 1, task_state="RUNNING")
    await set_task(client, identity, 1, task_state="COMPLETED", simulated_primaries=2500)
    await set_task(client, identity, 1, simulated_primaries=1200, estimated_time=80)
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert (row["task_state"], row["simulated_primaries"], row["estimated_time"]) == (
        "COMPLETED",
        2500,
        None,
    )


async def test_job_state_follows_tasks(worker, conn):
    client, _, identity = worker
    assert await job_of(conn) == ("PENDING", False)
    await set_task(client, identity, 1, task_state="RUNNING")
    assert await job_of(conn) == ("RUNNING", False)
    await set_task(client, identity, 2, task_state="CANCELED")
    for task_id in (3, 4):
        await set_task(client, identity, task_id, task_state="RUNNING")
        await set_task(client, identity, task_id, task_state="FAILED")
    assert await job_of(conn) == ("RUNNING", False)
    await set_task(client, identity, 1, task_state="COMPLETED")
    # Every task terminal, one COMPLETED, no results yet: waiting for a merge step.
    assert await job_of(conn) == ("MERGING_QUEUED", False)


async def test_all_tasks_failed(worker, conn):
    client, _, identity = worker
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="RUNNING")
    for task_id in (1, 2, 3):
        await set_task(client, identity, task_id, task_state="FAILED")
    assert await job_of(conn) == ("RUNNING", False)
    await set_task(client, identity, 4, task_state="FAILED")
    assert await job_of(conn) == ("FAILED", True)


async def test_all_tasks_canceled_by_workers(worker, conn):
    client, _, identity = worker
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="CANCELED")
    assert await job_of(conn) == ("CANCELED", True)


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
async def test_a_task_that_ends_unstarted_starts_at_the_end_it_was_sent(worker, conn, state):
    """A worker may report only a task's end (a RUNNING report lost, or its end retried long
    after): with no start sent, the start is the end sent, not the server's clock, which made
    a task end before it started."""
    client, _, identity = worker
    await set_task(client, identity, 1, task_state=state, end_time="2024-01-15T10:05:23Z")
    row = await conn.fetchrow("SELECT start_time, end_time FROM tasks WHERE task_id = 1")
    moment = datetime(2024, 1, 15, 10, 5, 23, tzinfo=UTC)
    assert (row["start_time"], row["end_time"]) == (moment, moment)


async def test_times_and_idempotence(worker, conn):
    client, _, identity = worker
    await set_task(client, identity, 1, task_state="RUNNING", estimated_time=12.6)
    first = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert first["start_time"] is not None and first["end_time"] is None
    assert first["estimated_time"] == 13
    # Repeating the state (a retried request) changes nothing, not even start_time.
    await set_task(client, identity, 1, task_state="RUNNING")
    again = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert again == first
    # Times sent by the worker win; an ISO time without an offset is UTC.
    await set_task(
        client,
        identity,
        2,
        task_state="RUNNING",
        start_time="2024-01-15T10:00:00Z",
        simulated_primaries=5,
    )
    await set_task(client, identity, 2, task_state="COMPLETED", end_time="2024-01-15T10:05:23")
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 2")
    assert row["start_time"] == datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    assert row["end_time"] == datetime(2024, 1, 15, 10, 5, 23, tzinfo=UTC)
    assert row["simulated_primaries"] == 5
    await set_task(client, identity, 2, task_state="COMPLETED")
    # A progress update without a state, and null values, leave the rest alone.
    await set_task(client, identity, 1, simulated_primaries=40, estimated_time=None)
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert (row["task_state"], row["simulated_primaries"], row["estimated_time"]) == (
        "RUNNING",
        40,
        13,
    )


async def test_bearer_key(worker, conn):
    client, _, identity = worker
    body = {
        "simulation_id": identity["simulation_id"],
        "task_id": 1,
        "update_dict": {"task_state": "RUNNING"},
    }
    headers = {"Authorization": f"Bearer {identity['update_key']}"}
    response = await client.post("/tasks", json=body, headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Task updated"})
    response = await client.post("/tasks", json=body, headers={"Authorization": "Bearer nope"})
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})
    assert (await tasks_of(conn))[0] == (1, "RUNNING")


BAD_UPDATES = [
    ({"foo": 1}, "Unknown field in update_dict: foo"),
    ({"task_state": 1}, "Field update_dict.task_state must be of type string"),
    (
        {"task_state": "DONE"},
        "Invalid update_dict.task_state: must be one of UNKNOWN, PENDING, RUNNING, "
        "MERGING_QUEUED, MERGING_RUNNING, COMPLETED, FAILED, CANCELED",
    ),
    ({"simulated_primaries": "5"}, "Field update_dict.simulated_primaries must be of type integer"),
    ({"requested_primaries": 1.5}, "Field update_dict.requested_primaries must be of type integer"),
    (
        {"simulated_primaries": True},
        "Field update_dict.simulated_primaries must be of type integer",
    ),
    (
        {"simulated_primaries": -1},
        "Invalid update_dict.simulated_primaries: must be between 0 and 9223372036854775807",
    ),
    ({"estimated_time": "10"}, "Field update_dict.estimated_time must be a number"),
    (
        {"estimated_time": 1e12},
        "Invalid update_dict.estimated_time: must be between 0 and 2147483647",
    ),
    ({"start_time": 5}, "Field update_dict.start_time must be an ISO 8601 string"),
    ({"end_time": "yesterday"}, "Invalid update_dict.end_time: not an ISO 8601 timestamp"),
]


@pytest.mark.parametrize(("update", "message"), BAD_UPDATES)
async def test_bad_update_dict(worker, conn, update, message):
    client, _, identity = worker
    body = {**identity, "task_id": 1, "update_dict": {"task_state": "RUNNING", **update}}
    assert await post(client, "/tasks", body, 400) == {"message": message}
    row = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    assert (row["task_state"], row["start_time"], row["simulated_primaries"]) == (
        "PENDING",
        None,
        0,
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"update_dict": {}}, 400, "Missing field: simulation_id"),
        ({"simulation_id": 5, "task_id": 1}, 400, "Field simulation_id must be of type string"),
        ({"simulation_id": "", "task_id": 1}, 400, "Missing field: simulation_id"),
        ({"simulation_id": "<job>", "update_dict": {}}, 400, "Missing field: task_id"),
        ({"simulation_id": "<job>", "task_id": "1"}, 400, "Field task_id must be of type integer"),
        (
            {"simulation_id": "<job>", "task_id": 0},
            400,
            "Invalid task_id: must be a positive integer",
        ),
        ({"simulation_id": "<job>", "task_id": 1}, 400, "Missing field: update_dict"),
        (
            {"simulation_id": "<job>", "task_id": 1, "update_dict": []},
            400,
            "Field update_dict must be of type object",
        ),
        ({"simulation_id": "<job>", "task_id": 5, "update_dict": {}}, 404, "Task not found"),
        ({"simulation_id": "nope", "task_id": 1, "update_dict": {}}, 404, "Simulation not found"),
    ],
)
async def test_bad_task_requests(worker, conn, body, status, message):
    client, _, identity = worker
    if body.get("simulation_id") == "<job>":
        body = {**body, "simulation_id": identity["simulation_id"]}
    body = {"update_key": identity["update_key"], **body}
    assert await post(client, "/tasks", body, status) == {"message": message}
    assert await tasks_of(conn) == [(n, "PENDING") for n in (1, 2, 3, 4)]


@pytest.mark.parametrize(
    ("steps", "task_state", "message"),
    [
        (["RUNNING"], "PENDING", "Task 1 cannot go from RUNNING to PENDING"),
        (["RUNNING"], "MERGING_QUEUED", "Task 1 cannot go from RUNNING to MERGING_QUEUED"),
        (["RUNNING", "COMPLETED"], "RUNNING", "Task 1 cannot go from COMPLETED to RUNNING"),
        (["RUNNING", "COMPLETED"], "FAILED", "Task 1 cannot go from COMPLETED to FAILED"),
        (["RUNNING", "FAILED"], "CANCELED", "Task 1 cannot go from FAILED to CANCELED"),
        (["CANCELED"], "RUNNING", "Task 1 cannot go from CANCELED to RUNNING"),
    ],
)
async def test_illegal_transitions(worker, conn, steps, task_state, message):
    client, _, identity = worker
    for state in steps:
        await set_task(client, identity, 1, task_state=state)
    before = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1")
    body = {
        **identity,
        "task_id": 1,
        "update_dict": {"task_state": task_state, "estimated_time": 9},
    }
    assert await post(client, "/tasks", body, 409) == {"message": message}
    assert await conn.fetchrow("SELECT * FROM tasks WHERE task_id = 1") == before


async def post_all(url: str, bodies: list[dict]) -> list[int]:
    """POST every body at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: dict) -> int:
            async with session.post(url, json=body) as response:
                return response.status

        return await asyncio.gather(*(one(body) for body in bodies))


async def test_concurrent_task_updates(aiohttp_client, make_config, conn):
    """200 concurrent POST /tasks on one job: no update is lost, the job state is exact."""
    app = create_app(make_config())
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    job_id = await submit(client, payload(ntasks=200))
    identity = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
    url = str(client.make_url("/tasks"))

    def body(task_id: int, state: str) -> dict:
        return {**identity, "task_id": task_id, "update_dict": {"task_state": state}}

    statuses = await post_all(url, [body(n, "RUNNING") for n in range(1, 201)])
    assert statuses == [202] * 200
    assert await job_of(conn) == ("RUNNING", False)
    # The last updates of a job are where a lost update would show: each transaction must
    # see every other task's final state. Task 200 fails, all others complete.
    finals = [body(n, "COMPLETED" if n < 200 else "FAILED") for n in range(1, 201)]
    assert await post_all(url, finals) == [202] * 200
    rows = await conn.fetch("SELECT task_state, count(*) FROM tasks GROUP BY 1 ORDER BY 1")
    assert [tuple(row) for row in rows] == [("COMPLETED", 199), ("FAILED", 1)]
    assert await job_of(conn) == ("MERGING_QUEUED", False)

    # And a second job whose 200 tasks all fail concurrently ends FAILED, exactly once.
    other = await submit(client, payload(ntasks=200))
    identity.update(simulation_id=other, update_key=recorder.key(other))
    assert await post_all(url, [body(n, "RUNNING") for n in range(1, 201)]) == [202] * 200
    assert await post_all(url, [body(n, "FAILED") for n in range(1, 201)]) == [202] * 200
    row = await conn.fetchrow(
        "SELECT job_state, end_time FROM simulations WHERE job_id = $1", other
    )
    assert row["job_state"] == "FAILED" and row["end_time"] is not None


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00Z", "0999-06-01T00:00:00Z", "9999-01-01T00:00:00Z"]
)
async def test_times_the_status_cannot_show_are_refused(worker, conn, moment):
    """A worker's start_time of year 1 came back from asyncpg as a naive datetime (its
    -infinity sentinel) and made every GET /jobs/direct of the job a 500; years before 1000 were
    shown without four digits (not ISO 8601)."""
    client, _, identity = worker
    body = {**identity, "task_id": 1, "update_dict": {"start_time": moment}}
    assert await post(client, "/tasks", body, 400) == {
        "message": "Invalid update_dict.start_time: must be in the years 1970 to 9998"
    }
    response = await client.get("/jobs/direct", params={"job_id": identity["simulation_id"]})
    assert response.status == 200, await response.text()
    assert (await conn.fetchval("SELECT start_time FROM tasks WHERE task_id = 1")) is None
