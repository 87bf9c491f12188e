"""`DELETE /user/simulations`: the seed's example and errors, deletion in every state, the
cascade, and another user's simulation."""

import asyncio

import asyncpg
import pytest

from server.jobs.states import JOB_STATES, TERMINAL_STATES
from server.results.caches.changes import LEASE
from server.store import tasks
from tests.helpers import (
    EDITOR,
    add_results_and_logs,
    lock_waiters,
    login,
    set_simulation,
    stored_counts,
    submit,
    switch_user,
)

ALL_GONE = {k: 0 for k in ("simulations", "tasks", "inputs", "estimators", "pages", "logfiles")}
FULL = {"simulations": 1, "tasks": 4, "inputs": 1, "estimators": 1, "pages": 2, "logfiles": 2}


async def full_simulation(client, conn, state: str) -> str:
    """A submitted simulation with tasks, input, results and log files, in `state`."""
    job_id = await submit(client, EDITOR)
    await add_results_and_logs(client, conn, job_id)
    await set_simulation(conn, job_id, job_state=state)
    assert await stored_counts(conn, job_id) == FULL
    return job_id


async def delete(client, job_id: str | None) -> tuple[int, dict]:
    query = "" if job_id is None else f"?job_id={job_id}"
    response = await client.delete(f"/user/simulations{query}")
    return response.status, await response.json()


async def test_seed_example(client, conn):
    await login(client)
    job_id = await full_simulation(client, conn, "COMPLETED")
    other = await full_simulation(client, conn, "COMPLETED")
    assert await delete(client, job_id) == (200, {"message": "Simulation deleted"})
    assert await stored_counts(conn, job_id) == ALL_GONE
    assert await stored_counts(conn, other) == FULL
    assert await delete(client, job_id) == (404, {"message": "Simulation not found"})


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
async def test_terminal_states_are_deleted_with_everything(client, conn, state):
    await login(client)
    job_id = await full_simulation(client, conn, state)
    kept = await full_simulation(client, conn, state)
    assert await delete(client, job_id) == (200, {"message": "Simulation deleted"})
    assert await stored_counts(conn, job_id) == ALL_GONE
    assert await stored_counts(conn, kept) == FULL
    response = await client.get("/user/simulations")
    assert [item["job_id"] for item in (await response.json())["simulations"]] == [kept]


@pytest.mark.parametrize("state", [s for s in JOB_STATES if s not in TERMINAL_STATES])
async def test_unfinished_states_are_kept(client, conn, state):
    await login(client)
    job_id = await full_simulation(client, conn, state)
    assert await delete(client, job_id) == (
        409,
        {"message": "Simulation is still running (cannot delete)"},
    )
    assert await stored_counts(conn, job_id) == FULL
    assert await conn.fetchval("SELECT job_state FROM simulations") == state


async def test_a_job_id_given_twice_is_400_and_deletes_nothing(client, conn):
    """`?job_id=A&job_id=B` deleted A and said nothing of B: which one was meant is unknown."""
    await login(client)
    first = await full_simulation(client, conn, "COMPLETED")
    second = await full_simulation(client, conn, "COMPLETED")
    response = await client.delete(f"/user/simulations?job_id={first}&job_id={second}")
    answer = {"message": "Invalid job_id: given more than once"}
    assert (response.status, await response.json()) == (400, answer)
    assert [await stored_counts(conn, job_id) for job_id in (first, second)] == [FULL, FULL]


async def test_seed_errors(client, conn):
    await login(client)
    assert await delete(client, None) == (400, {"message": "Missing job_id"})
    assert await delete(client, "") == (400, {"message": "Missing job_id"})
    assert await delete(client, "no-such-job") == (404, {"message": "Simulation not found"})


async def test_another_users_simulation(client, conn):
    await login(client)
    job_id = await full_simulation(client, conn, "COMPLETED")
    await switch_user(client, "bob")
    assert await delete(client, job_id) == (403, {"message": "Simulation belongs to another user"})
    assert await stored_counts(conn, job_id) == FULL
    # Not even whether it could be deleted is told: the same 403 for a running one.
    await set_simulation(conn, job_id, job_state="RUNNING")
    assert await delete(client, job_id) == (403, {"message": "Simulation belongs to another user"})
    await switch_user(client, "alice")
    await set_simulation(conn, job_id, job_state="FAILED")
    assert await delete(client, job_id) == (200, {"message": "Simulation deleted"})


async def test_needs_login(client):
    assert await delete(client, "x") == (401, {"message": "No token provided"})


async def wait_for_lock_wait(database_url: str) -> None:
    """Until some backend waits on a lock (the DELETE behind the test's row lock); at most 5 s."""
    watcher = await asyncpg.connect(database_url)
    try:
        for _ in range(500):
            if await lock_waiters(watcher):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the DELETE never waited for the row lock")
    finally:
        await watcher.close()


async def test_never_deletes_what_a_lock_holder_made_unfinished(client, conn, database_url):
    """The DELETE waits for a worker holding the row lock and checks the state it committed.

    (Terminal jobs do not go back to running; this is the strongest case to check atomicity.)
    """
    await login(client)
    job_id = await full_simulation(client, conn, "COMPLETED")
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM simulations WHERE job_id = $1 FOR UPDATE", job_id)
        await conn.execute("UPDATE simulations SET job_state = 'RUNNING' WHERE job_id = $1", job_id)
        pending = asyncio.ensure_future(delete(client, job_id))
        await wait_for_lock_wait(database_url)
    assert await pending == (409, {"message": "Simulation is still running (cannot delete)"})
    assert await stored_counts(conn, job_id) == FULL


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/jobs/direct", "Simulation not found"),
        ("/ui/jobs/direct", "Job with provided ID does not exist"),
        ("/ui/inputs", "Job with provided ID does not exist"),
    ],
)
async def test_a_poll_racing_the_delete_is_404(client, conn, monkeypatch, path, message):
    """A poll whose owner check ran before the DELETE committed, and whose status read after it
    (the UI polls a job for a moment after deleting it): 404 as for an unknown job, never 500."""
    await login(client)
    job_id = await full_simulation(client, conn, "COMPLETED")
    job_status = tasks.job_status

    async def deleted_meanwhile(db, sim_pk):  # a synchronisation point, not a mock
        assert await delete(client, job_id) == (200, {"message": "Simulation deleted"})
        return await job_status(db, sim_pk)

    monkeypatch.setattr(tasks, "job_status", deleted_meanwhile)
    response = await client.get(path, params={"job_id": job_id})
    assert (response.status, await response.json()) == (404, {"message": message})


async def test_a_concurrent_delete_answers_404_only_after_the_lease(client, conn):
    """Two DELETEs of one simulation at once: the one that deletes answers once every server
    process has acknowledged the deletion; the other one's 404 waits out the lease (any
    process that did not acknowledge stops serving it from memory by then). Before, the 404
    could come first, while another process still served the simulation; or the other one
    was a 409 "still running" (it read the state COMPLETED from before the delete)."""
    await login(client)
    job_id = await full_simulation(client, conn, "COMPLETED")
    loop, answered = asyncio.get_running_loop(), {}

    async def timed_delete() -> None:
        status, _ = await delete(client, job_id)
        answered[status] = loop.time()

    started = loop.time()
    await asyncio.gather(timed_delete(), timed_delete())
    assert sorted(answered) == [200, 404]
    assert answered[404] - started >= LEASE
    assert await delete(client, job_id) == (404, {"message": "Simulation not found"})
