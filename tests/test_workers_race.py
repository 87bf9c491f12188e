"""Concurrent worker reports of one task never lose an acknowledged state, and
the stored job state is always the one its tasks justify (api.md, "POST /tasks")."""

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.helpers import eventually, submit

TRIALS = 20
PROGRESS_EACH_SIDE = 8


def justified(task_states: list[str], has_results: bool) -> str:
    """The job state api.md derives from the tasks and the stored results."""
    if all(state == "PENDING" for state in task_states):
        return "PENDING"
    if any(state not in ("COMPLETED", "FAILED", "CANCELED") for state in task_states):
        return "RUNNING"
    if all(state == "FAILED" for state in task_states):
        return "FAILED"
    if "COMPLETED" in task_states:
        return "COMPLETED" if has_results else "MERGING_QUEUED"
    return "CANCELED"


async def report(client, identity: dict[str, str], update: dict[str, Any]) -> int:
    body = {**identity, "task_id": 1, "update_dict": update}
    response = await client.post("/tasks", json=body)
    await response.read()
    return response.status


async def race(client, identity: dict[str, str], state: str) -> list[int]:
    """8 progress reports, one move to `state`, 8 more progress reports, all at once."""
    progress = [{"simulated_primaries": n} for n in range(PROGRESS_EACH_SIDE)]
    updates = [*progress, {"task_state": state}, *progress]
    return await asyncio.gather(*(report(client, identity, update) for update in updates))


async def stored(conn, job_id: str) -> tuple[list[str], str, bool]:
    rows = await conn.fetch(
        "SELECT t.task_state FROM tasks t JOIN simulations s ON s.id = t.simulation_id"
        " WHERE s.job_id = $1 ORDER BY t.task_id",
        job_id,
    )
    job = await conn.fetchrow(
        "SELECT job_state, EXISTS (SELECT FROM estimators e WHERE e.simulation_id = s.id) AS res"
        " FROM simulations s WHERE job_id = $1",
        job_id,
    )
    return [row["task_state"] for row in rows], job["job_state"], job["res"]


@pytest.mark.parametrize(
    ("before", "move"), [("RUNNING", "COMPLETED"), ("PENDING", "RUNNING")], ids=["end", "start"]
)
async def test_acknowledged_task_state_is_never_lost(worker, conn, before, move) -> None:
    client, recorder, _ = worker
    lost, unjustified = [], []
    for trial in range(TRIALS):
        job_id = await submit(client, ntasks=1)
        identity = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
        if before == "RUNNING":
            assert await report(client, identity, {"task_state": "RUNNING"}) == 202
        assert await race(client, identity, move) == [202] * (2 * PROGRESS_EACH_SIDE + 1)
        task_states, job_state, has_results = await stored(conn, job_id)
        if task_states != [move]:
            lost.append((trial, task_states, job_state))
        if job_state != justified(task_states, has_results):
            unjustified.append((trial, task_states, job_state))
    assert lost == [], f"{len(lost)} of {TRIALS} trials lost the acknowledged {move}"
    assert unjustified == [], f"{len(unjustified)} of {TRIALS} trials: job state not justified"


async def test_a_job_s_writes_waiting_for_its_lock_leave_the_pool_to_other_requests(
    worker, conn, database_url
) -> None:
    """A long write holds a job's row lock (a large POST /results or /logfiles: seconds), and
    the job's other reports wait for it. They waited holding a connection of the pool each: 30
    of them took the whole pool, and every other request of the server waited for the lock too
    (server/jobs/turns.py)."""
    client, recorder, _ = worker
    job_id = await submit(client, ntasks=1)
    identity = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
    holder = await asyncpg.connect(database_url)
    try:
        locking = holder.transaction()
        await locking.start()
        await holder.execute("SELECT FROM simulations WHERE job_id = $1 FOR UPDATE", job_id)
        updates = [{"simulated_primaries": n} for n in range(30)]
        reports = [asyncio.ensure_future(report(client, identity, u)) for u in updates]
        await eventually(waiting_for_a_lock(conn))
        await asyncio.sleep(0.3)  # the other reports arrive meanwhile
        other = await asyncio.wait_for(client.get("/user/simulations"), 10)
        assert other.status == 200
        assert job_id in [s["job_id"] for s in (await other.json())["simulations"]]
        await locking.rollback()
        assert await asyncio.gather(*reports) == [202] * 30
    finally:
        await holder.close()


def waiting_for_a_lock(conn) -> Any:
    async def check() -> bool:
        return await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") > 0

    return check
