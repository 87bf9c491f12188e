"""`POST /jobs/direct`: what a submission stores, and every 400 for a bad body (whole bodies),
after which nothing is stored."""

import asyncio
import threading
from typing import Any

import pytest

from server.app import create_app
from server.store import inputs
from tests.helpers import EDITOR, SHIELDHIT_FILES, login, payload, status, submit

FILES = payload(SHIELDHIT_FILES)
EDITOR_BODY = payload(EDITOR)
MAX_FILE_SIZE = 5000
BEAM = FILES["input_files"]["beam.dat"]


def files_with(**files: Any) -> dict[str, Any]:
    return {**FILES, "input_files": files}


def without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != name}


BAD_BODIES = [
    ("sim_type missing", without(FILES, "sim_type"), "Missing field: sim_type"),
    ("sim_type not a string", {**FILES, "sim_type": 5}, "Field sim_type must be of type string"),
    (
        "unknown simulator",
        {**FILES, "sim_type": "mcnp"},
        "Invalid sim_type: must be one of shieldhit, fluka, geant4, topas",
    ),
    ("ntasks missing", without(FILES, "ntasks"), "Missing field: ntasks"),
    ("ntasks a string", {**FILES, "ntasks": "2"}, "Field ntasks must be of type integer"),
    ("ntasks a boolean", {**FILES, "ntasks": True}, "Field ntasks must be of type integer"),
    ("ntasks 0", {**FILES, "ntasks": 0}, "Invalid ntasks: must be between 1 and 1000"),
    ("ntasks too many", {**FILES, "ntasks": 1001}, "Invalid ntasks: must be between 1 and 1000"),
    (
        "unknown input_type",
        {**FILES, "input_type": "json"},
        "Invalid input_type: must be one of editor, files",
    ),
    (
        "files without files",
        without(FILES, "input_files"),
        "Missing field: sim_data (or input_files)",
    ),
    (
        "editor without project",
        without(EDITOR_BODY, "input_json"),
        "Missing field: sim_data (or input_json)",
    ),
    (
        "sim_data not an object",
        {**without(FILES, "input_files"), "sim_data": ["beam.dat"]},
        "Field sim_data must be of type object",
    ),
    ("no files", files_with(), "Invalid input files: at least one file is required"),
    (
        "too many files",
        files_with(**{f"f{n}.dat": "" for n in range(65)}),
        "Invalid input files: at most 64 files",
    ),
    ("a path", {**FILES, "input_files": {"../beam.dat": BEAM}}, "Invalid file name: '../beam.dat'"),
    ("a hidden file", {**FILES, "input_files": {".bashrc": ""}}, "Invalid file name: '.bashrc'"),
    (
        "a directory",
        {**FILES, "input_files": {"dir/beam.dat": BEAM}},
        "Invalid file name: 'dir/beam.dat'",
    ),
    (
        "content not text",
        files_with(**{"beam.dat": 5}),
        "Invalid file beam.dat: content must be a string",
    ),
    (
        "a file too large",
        files_with(**{"beam.dat": "x" * (MAX_FILE_SIZE + 1)}),
        f"Invalid file beam.dat: larger than {MAX_FILE_SIZE} bytes",
    ),
    (
        "a file too large in UTF-8 (its characters fit)",
        files_with(**{"beam.dat": "é" * (MAX_FILE_SIZE // 2 + 1)}),
        f"Invalid file beam.dat: larger than {MAX_FILE_SIZE} bytes",
    ),
    ("title not a string", {**FILES, "title": 5}, "Field title must be of type string"),
    ("title too long", {**FILES, "title": "x" * 1001}, "Invalid title: at most 1000 characters"),
    (
        "negative primaries",
        {**FILES, "number_of_primaries": -1},
        "Invalid number_of_primaries: must be 0 or more",
    ),
    (
        "primaries a string",
        {**FILES, "number_of_primaries": "10"},
        "Field number_of_primaries must be of type integer",
    ),
]


@pytest.fixture
async def user_client(aiohttp_client, make_config, conn):
    app = create_app(make_config(jobs={"max_file_size": MAX_FILE_SIZE}))
    client = await aiohttp_client(app)
    await login(client)
    return client


@pytest.mark.parametrize(("case", "body", "message"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_submission(user_client, conn, case, body, message):
    response = await user_client.post("/jobs/direct", json=body)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"{not json", "Malformed JSON body"), (b'["a list"]', "JSON body must be an object")],
)
async def test_body_not_an_object(user_client, conn, data, message):
    response = await user_client.post("/jobs/direct", data=data)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


async def test_submission_is_stored(user_client, conn):
    job_id = await submit(user_client, SHIELDHIT_FILES, ntasks=2, title="Water")
    row = await conn.fetchrow(
        "SELECT title, sim_type, input_type, platform, ntasks, job_state FROM simulations"
        " WHERE job_id = $1",
        job_id,
    )
    assert dict(row) == {
        "title": "Water",
        "sim_type": "shieldhit",
        "input_type": "files",
        "platform": "direct",
        "ntasks": 2,
        "job_state": "PENDING",
    }
    body = await status(user_client, job_id)
    assert [task["requested_primaries"] for task in body["job_tasks_status"]] == [5000, 5000]


async def test_default_title_and_primaries_of_an_editor_project(user_client, conn):
    job_id = await submit(user_client, EDITOR, ntasks=3, title=None, number_of_primaries=None)
    title = await conn.fetchval("SELECT title FROM simulations WHERE job_id = $1", job_id)
    assert title == EDITOR_BODY["input_json"]["project"]["title"]
    body = await status(user_client, job_id)
    total = EDITOR_BODY["input_json"]["beam"]["numberOfParticles"]
    assert sum(task["requested_primaries"] for task in body["job_tasks_status"]) == total


async def test_a_whole_number_of_particles_written_with_a_point_is_taken(user_client, conn):
    """`numberOfParticles: 10000.0` is 10,000 (JSON does not tell 10000.0 from 10000; the
    other integers of a project took it): it was refused, saying none was given."""
    project = {**EDITOR_BODY["input_json"], "beam": {**EDITOR_BODY["input_json"]["beam"]}}
    project["beam"]["numberOfParticles"] = 10000.0
    body = {**EDITOR_BODY, "input_json": project, "ntasks": 2}
    job_id = await submit(user_client, body, title=None, number_of_primaries=None)
    body = await status(user_client, job_id)
    assert [task["requested_primaries"] for task in body["job_tasks_status"]] == [5000, 5000]


async def test_other_requests_are_answered_while_a_submission_is_compressed(
    user_client, conn, monkeypatch
):
    """The input is compressed off the event loop: a submission of tens of MiB (jobs.max_ntasks
    tasks, files of jobs.max_file_size) took 1.2-1.8 s to compress, during which every other
    request of the process (other users' polls, workers' reports) waited. Here compressing
    waits until another request has been answered: on the event loop it never could be."""
    small = await submit(user_client, payload(ntasks=2))
    compressing, answered = threading.Event(), threading.Event()
    compress = inputs.compress_input

    def held(*args):
        compressing.set()
        assert answered.wait(10), "no other request was answered while compressing"
        return compress(*args)

    monkeypatch.setattr(inputs, "compress_input", held)
    submission = asyncio.ensure_future(user_client.post("/jobs/direct", json=payload()))
    assert await asyncio.to_thread(compressing.wait, 10)
    assert (await status(user_client, small))["job_state"] == "PENDING"
    answered.set()
    assert (await submission).status == 202


async def test_unfinished_simulations_are_limited_per_user(aiohttp_client, make_config, conn):
    """Each unfinished simulation holds a place in a runner's memory until it ends: a user
    past `jobs.max_unfinished` gets 429 and nothing is stored, until one ends; other users are
    not concerned."""
    client = await aiohttp_client(create_app(make_config(jobs={"max_unfinished": 2})))
    await login(client)
    first, _ = await submit(client), await submit(client)
    response = await client.post("/jobs/direct", json=FILES)
    refused = {
        "message": "Too many unfinished simulations: at most 2 at once; "
        "wait for some to end, or cancel some"
    }
    assert (response.status, await response.json()) == (429, refused)
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 2
    await login(client, "bob")
    await submit(client)
    alice = {"username": "alice", "password": "password1"}
    assert (await client.post("/auth/login", json=alice)).status == 202
    assert (await client.delete("/jobs/direct", params={"job_id": first})).status == 200
    await submit(client)
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 4


async def test_a_title_of_exactly_1000_characters_is_kept(client, conn):
    """api.md / README: titles of at most 1000 characters (1001 is 400: tests/test_jobs_submit)."""
    await login(client)
    title = "t" * 1000
    job_id = await submit(client, title=title)
    response = await client.get("/user/simulations")
    assert response.status == 200
    [simulation] = (await response.json())["simulations"]
    assert (simulation["job_id"], simulation["title"]) == (job_id, title)
