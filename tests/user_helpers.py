"""Helpers for the user-endpoint tests: real submissions, then seed-like values set in the DB.

Job ids and times cannot be chosen through the API, so simulations are submitted through
`POST /jobs/direct` with the captured payloads and their listed columns are then set directly.
"""

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from tests.conftest import FIXTURES, login
from tests.results_helpers import KEY, set_key

EDITOR = "json_payload_editor.json"
SHIELDHIT_FILES = "shieldhit_json_payload_files.json"
FLUKA_FILES = "fluka_json_payload_files.json"


def payload(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / name).read_bytes())


def utc(text: str) -> datetime:
    """`2024-01-15T10:00:00Z` as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def submit(client: TestClient, name: str = FLUKA_FILES, **changes: Any) -> str:
    """Submit a captured payload (with some fields changed); the new job_id."""
    response = await client.post("/jobs/direct", json={**payload(name), **changes})
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


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
    await add_logfiles(conn, job_id, {"shieldhit_0001.log": "ok\n", "simulation.log": "done"})


async def add_logfiles(conn: asyncpg.Connection, job_id: str, logfiles: dict[str, str]) -> None:
    """Stand-in for `POST /logfiles` (built separately) until it lands."""
    await conn.executemany(
        "INSERT INTO logfiles (simulation_id, name, content)"
        " SELECT id, $2, $3 FROM simulations WHERE job_id = $1",
        [(job_id, name, text) for name, text in logfiles.items()],
    )
