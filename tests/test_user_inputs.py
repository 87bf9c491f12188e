"""`GET /inputs` and `GET /logfiles`, and another user's simulation on every user endpoint."""

import hashlib
import tracemalloc

import orjson
import pytest

from server.editor import convert
from tests.helpers import (
    EDITOR,
    FLUKA_FILES,
    SHIELDHIT_FILES,
    add_logfiles,
    add_results_and_logs,
    login,
    payload,
    set_key,
    set_simulation,
    stored_counts,
    submit,
    switch_user,
)


async def get(client, path: str) -> tuple[int, dict]:
    response = await client.get(path)
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("name", "input_type", "key"),
    [
        (EDITOR, "editor", "input_json"),
        (SHIELDHIT_FILES, "files", "input_files"),
        (FLUKA_FILES, "files", "input_files"),
    ],
)
async def test_inputs_as_submitted(client, conn, name, input_type, key):
    await login(client)
    job_id = await submit(client, name)
    response = await client.get(f"/inputs?job_id={job_id}")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = orjson.loads(await response.read())
    submitted = payload(name)[key]
    expected = {"message": "Inputs", "input_type": input_type, "input": submitted}
    if input_type == "editor":  # 10000 primaries over 4 tasks: the files say NSTAT 2500
        expected["input_files"] = convert(submitted, 2500)
        assert "\nNSTAT       2500 0 " in body["input_files"]["beam.dat"]
    assert body == expected
    assert list(body["input"]) == list(submitted)  # key order too


async def test_inputs_sent_as_sim_data(client, conn):
    await login(client)
    files = {"beam.dat": "NSTAT 1000\n", "geo.dat": '\u00c5ngstr\u00f6m \\ "quoted"\n'}
    job_id = await submit(client, FLUKA_FILES, input_files=None, sim_data=files)
    assert await get(client, f"/inputs?job_id={job_id}") == (
        200,
        {"message": "Inputs", "input_type": "files", "input": files},
    )


async def test_logfiles(client, conn):
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        404,
        {"message": "Logfiles not available"},
    )
    logs = {"simulation.log": "line 1\nline 2\n", "fluka_0001.out": "\u00b5s \u2713", "e": ""}
    await set_key(conn, job_id)
    await add_logfiles(client, job_id, logs)
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": logs},
    )


async def test_many_large_logfiles_are_sent_without_holding_them_all(client, conn):
    """A simulation of 1000 tasks may hold hundreds of MB of logs (64 KiB tails of each task's
    outputs, or what external workers send): they were read and encoded whole for each
    GET /logfiles, several times their size at once for every concurrent request."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    logs = {f"task_{n:03}_stdout": f"line {n} \u00b5s\n" * 4000 for n in range(300)}  # 23 MB
    await set_key(conn, job_id)
    names = list(logs)
    for start in range(0, len(names), 10):  # bodies under 1 MiB
        await add_logfiles(client, job_id, {name: logs[name] for name in names[start : start + 10]})
    expected = hashlib.sha256(orjson.dumps({"message": "Logfiles", "logfiles": logs})).digest()
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with client.get(f"/logfiles?job_id={job_id}") as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200 and digest.digest() == expected
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB to send 23 MB of logs"


@pytest.mark.parametrize("path", ["/inputs", "/logfiles"])
async def test_missing_and_unknown_job(client, conn, path):
    await login(client)
    assert await get(client, path) == (400, {"message": "Missing job_id"})
    assert await get(client, f"{path}?job_id=") == (400, {"message": "Missing job_id"})
    assert await get(client, f"{path}?job_id=nope") == (404, {"message": "Simulation not found"})


@pytest.mark.parametrize("path", ["/inputs", "/logfiles"])
async def test_needs_login(client, path):
    assert await get(client, f"{path}?job_id=x") == (401, {"message": "No token provided"})


async def test_another_users_simulation_on_every_endpoint(client, conn):
    """Bob gets 403 and nothing of Alice's simulation; nothing of it changes."""
    await login(client)
    job_id = await submit(client, EDITOR)
    await add_results_and_logs(client, conn, job_id)
    await set_simulation(conn, job_id, job_state="COMPLETED")
    before = await stored_counts(conn, job_id)
    await switch_user(client, "bob")
    forbidden = (403, {"message": "Simulation belongs to another user"})
    assert await get(client, f"/inputs?job_id={job_id}") == forbidden
    assert await get(client, f"/logfiles?job_id={job_id}") == forbidden
    response = await client.delete(f"/user/simulations?job_id={job_id}")
    assert (response.status, await response.json()) == forbidden
    assert await get(client, "/user/simulations") == (
        200,
        {"message": "User simulations", "simulations": [], "page_count": 0, "simulations_count": 0},
    )
    assert await stored_counts(conn, job_id) == before
    await switch_user(client, "alice")
    assert (await get(client, f"/logfiles?job_id={job_id}"))[0] == 200
    assert (await get(client, f"/inputs?job_id={job_id}"))[0] == 200
