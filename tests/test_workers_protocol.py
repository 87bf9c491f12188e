"""The worker protocol's common rules (api.md "Worker-facing endpoints"): update keys, unknown
and terminal simulations, body limits and gzip; `POST /jobs` and `POST /logfiles`."""

import gzip

import orjson
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


@pytest.mark.parametrize("path", ["/tasks", "/jobs", "/logfiles"])
async def test_malformed_bodies(worker, path):
    client, _, _ = worker
    headers = {"Content-Type": "application/json"}
    response = await client.post(path, data=b'{"simulation_id": ', headers=headers)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    response = await client.post(path, data=b"[1]", headers=headers)
    assert (response.status, await response.json()) == (
        400,
        {"message": "JSON body must be an object"},
    )


async def test_gzip_request_body(worker, conn):
    """aiohttp decodes `Content-Encoding: gzip` request bodies before the handler reads them."""
    client, _, identity = worker
    body = {**identity, "task_id": 3, "update_dict": {"task_state": "RUNNING"}}
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post("/tasks", data=gzip.compress(orjson.dumps(body)), headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Task updated"})
    logs = {**identity, "logfiles": {"stdout": "x" * 100_000}}
    response = await client.post(
        "/logfiles", data=gzip.compress(orjson.dumps(logs)), headers=headers
    )
    assert (response.status, await response.json()) == (202, {"message": "Logfiles saved"})
    assert (await tasks_of(conn))[2] == (3, "RUNNING")
    assert await conn.fetchval("SELECT length(content) FROM logfiles") == 100_000


WORKER_BODIES = {
    "/tasks": {"task_id": 1, "update_dict": {"task_state": "RUNNING"}},
    "/jobs": {"job_state": "FAILED"},
    "/logfiles": {"logfiles": {"stdout": "hello"}},
}


@pytest.mark.parametrize("path", list(WORKER_BODIES))
async def test_keys_and_unknown_simulations(worker, conn, path):
    client, recorder, identity = worker
    other_job = await submit(client, payload(ntasks=1))
    body = {**identity, **WORKER_BODIES[path]}
    for key in (None, "", "x" * 43, recorder.key(other_job), 12):
        bad = {**body, "update_key": key}
        assert await post(client, path, bad, 403) == {"message": "Invalid update key"}
    unknown = {**body, "simulation_id": "no-such-job"}
    assert await post(client, path, unknown, 404) == {"message": "Simulation not found"}
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0
    assert await conn.fetchval("SELECT count(*) FROM tasks WHERE task_state <> 'PENDING'") == 0
    states = await conn.fetch("SELECT DISTINCT job_state FROM simulations")
    assert [row["job_state"] for row in states] == ["PENDING"]


def _logfiles_request(body: dict, form: str, key: str) -> tuple[bytes, dict[str, str]]:
    """A `POST /logfiles` of `body` (with 100 kB of log if `form` is "large", gzipped if
    "gzip") with `key` as its Bearer header."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if form == "large":
        body = {**body, "logfiles": {"task.log": "x" * 100_000}}
    if form == "gzip":
        return gzip.compress(orjson.dumps(body)), {**headers, "Content-Encoding": "gzip"}
    return orjson.dumps(body), headers


@pytest.mark.parametrize("form", ["plain", "large", "gzip"])
async def test_the_header_key_is_judged_whatever_the_body(worker, conn, form):
    """A body's key and a header's key that disagree: the header's is the one checked, as it is
    before a large or encoded body is read, so the answer is the same whatever the body's size
    and encoding (it was 202 for a small plain body, 403 for the same over 64 KiB)."""
    client, recorder, identity = worker
    ended = await submit(client, payload(ntasks=1))
    assert (await client.delete("/jobs/direct", params={"job_id": ended})).status == 200
    body = {**identity, "logfiles": {"task.log": "ok"}}
    data, headers = _logfiles_request(body, form, "a-stale-key")
    response = await client.post("/logfiles", data=data, headers=headers)
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})
    # the ended job's own worker, its key in the header and a live job's in the body
    of_ended = {**body, "simulation_id": ended}
    data, headers = _logfiles_request(of_ended, form, recorder.key(ended))
    response = await client.post("/logfiles", data=data, headers=headers)
    message = "Simulation is CANCELED: no more updates are accepted"
    assert (response.status, await response.json()) == (409, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0
    wrong_in_body = {**body, "update_key": "a-stale-key"}
    data, headers = _logfiles_request(wrong_in_body, form, identity["update_key"])
    response = await client.post("/logfiles", data=data, headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Logfiles saved"})
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 1


@pytest.mark.parametrize("path", list(WORKER_BODIES))
async def test_terminal_job_refuses_updates(worker, conn, path):
    client, _, identity = worker
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="CANCELED")
    body = {**identity, **WORKER_BODIES[path]}
    assert await post(client, path, body, 409) == {
        "message": "Simulation is CANCELED: no more updates are accepted"
    }
    assert await job_of(conn) == ("CANCELED", True)
    assert await tasks_of(conn) == [(n, "CANCELED") for n in (1, 2, 3, 4)]
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_job_updates_for_merging(worker, conn):
    client, recorder, identity = worker
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="RUNNING")
    body = {**identity, "job_state": "MERGING_RUNNING"}
    assert await post(client, "/jobs", body, 409) == {
        "message": "Job cannot go from RUNNING to MERGING_RUNNING"
    }
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="COMPLETED")
    assert await job_of(conn) == ("MERGING_QUEUED", False)
    for _ in range(2):  # repeating it is harmless
        assert await post(client, "/jobs", body) == {"message": "Job updated"}
        assert await job_of(conn) == ("MERGING_RUNNING", False)
    # A retried task update must not send a running merge back to the queue, nor an upload
    # of no estimators (the job state is recomputed: sql/queries/simulations.sql's guard).
    await set_task(client, identity, 4, task_state="COMPLETED")
    assert await job_of(conn) == ("MERGING_RUNNING", False)
    assert await post(client, "/results", {**identity, "estimators": []}) == {
        "message": "Results saved"
    }
    assert await job_of(conn) == ("MERGING_RUNNING", False)
    for state in ("MERGING_QUEUED", "COMPLETED", "RUNNING"):
        assert await post(client, "/jobs", {**identity, "job_state": state}, 409) == {
            "message": f"Job cannot go from MERGING_RUNNING to {state}"
        }
    assert await post(client, "/jobs", {**identity, "job_state": "FAILED"}) == {
        "message": "Job updated"
    }
    assert await job_of(conn) == ("FAILED", True)
    assert recorder.canceled == [identity["simulation_id"]]


async def test_job_failed_by_worker(worker, conn):
    client, recorder, identity = worker
    await set_task(client, identity, 1, task_state="RUNNING")
    await set_task(client, identity, 2, task_state="RUNNING")
    await set_task(client, identity, 2, task_state="COMPLETED")
    assert await post(client, "/jobs", {**identity, "job_state": "FAILED"}) == {
        "message": "Job updated"
    }
    assert await job_of(conn) == ("FAILED", True)
    # Nothing can finish the other tasks now: they are stopped.
    assert await tasks_of(conn) == [
        (1, "CANCELED"),
        (2, "COMPLETED"),
        (3, "CANCELED"),
        (4, "CANCELED"),
    ]
    assert recorder.canceled == [identity["simulation_id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing field: job_state"),
        ({"job_state": 3}, "Field job_state must be of type string"),
        (
            {"job_state": "DONE"},
            "Invalid job_state: must be one of UNKNOWN, PENDING, RUNNING, MERGING_QUEUED, "
            "MERGING_RUNNING, COMPLETED, FAILED, CANCELED",
        ),
    ],
)
async def test_bad_job_updates(worker, conn, body, message):
    client, _, identity = worker
    assert await post(client, "/jobs", {**identity, **body}, 400) == {"message": message}
    assert await job_of(conn) == ("PENDING", False)


async def test_logfiles_merge_by_name(worker, conn):
    client, _, identity = worker
    first = {"stdout": "first out", "stderr": "first err"}
    body = {**identity, "logfiles": first}
    assert await post(client, "/logfiles", body) == {"message": "Logfiles saved"}
    second = {"stdout": "second out", "task_1": "SHIELD-HIT12A\x00 done"}
    assert await post(client, "/logfiles", {**identity, "logfiles": second}) == {
        "message": "Logfiles saved"
    }
    rows = await conn.fetch("SELECT name, content FROM logfiles ORDER BY name")
    assert {row["name"]: row["content"] for row in rows} == {
        "stderr": "first err",
        "stdout": "second out",
        "task_1": "SHIELD-HIT12A\ufffd done",
    }


@pytest.mark.parametrize(
    ("logfiles", "message"),
    [
        (["stdout"], "Field logfiles must be of type object"),
        ({"stdout": "ok", "stderr": 5}, "Invalid logfile stderr: content must be a string"),
        ({"stdout": "ok", "": "x"}, "Invalid logfile name: 1-255 characters, no NUL"),
        ({"x" * 256: "x"}, "Invalid logfile name: 1-255 characters, no NUL"),
    ],
)
async def test_bad_logfiles_store_nothing(worker, conn, logfiles, message):
    client, _, identity = worker
    body = {**identity, "logfiles": logfiles}
    assert await post(client, "/logfiles", body, 400) == {"message": message}
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_a_simulation_holds_at_most_10000_log_files(worker, conn):
    """Reading a simulation's logs lists every file at once: a worker storing a million empty
    files (a few bytes each of its quota) made one `GET /logfiles` take 600 MB and hold the
    event loop for seconds. Past 10,000 files an upload is 413 and stores nothing; files
    replaced by name do not count twice."""
    client, _, identity = worker
    files = {f"task_{n}": "" for n in range(9_999)}
    saved = {"message": "Logfiles saved"}
    assert await post(client, "/logfiles", {**identity, "logfiles": files}) == saved
    more = {"task_0": "again", "merge": "x"}  # one new name: 10,000 files
    assert await post(client, "/logfiles", {**identity, "logfiles": more}) == saved
    too_many = {"task_1": "changed", "runner": "y"}
    assert await post(client, "/logfiles", {**identity, "logfiles": too_many}, 413) == {
        "message": "Too many log files: at most 10000 per simulation"
    }
    rows = await conn.fetch("SELECT name, content FROM logfiles WHERE name IN ('task_0', 'task_1')")
    assert {row["name"]: row["content"] for row in rows} == {"task_0": "again", "task_1": ""}
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 10_000


async def test_worker_body_limit(aiohttp_client, make_config, conn):
    """Workers have their own body limit, separate from the user-facing one."""
    app = create_app(make_config(server={"max_body_size": 4000, "worker_max_body_size": 10_000}))
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    job_id = await submit(client)
    identity = {"simulation_id": job_id, "update_key": recorder.key(job_id)}
    body = {**identity, "logfiles": {"stdout": "x" * 6000}}
    assert await post(client, "/logfiles", body) == {"message": "Logfiles saved"}
    body = {**identity, "logfiles": {"stdout": "y" * 10_000}}
    assert await post(client, "/logfiles", body, 413) == {
        "message": "Request body larger than 10000 bytes"
    }
    # The limit applies to the decoded body, however small the gzip stream.
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post(
        "/logfiles", data=gzip.compress(orjson.dumps(body)), headers=headers
    )
    assert response.status == 413
    rows = await conn.fetch("SELECT content FROM logfiles")
    assert [row["content"] for row in rows] == ["x" * 6000]
