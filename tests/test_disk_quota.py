"""Disk is bounded: a per-user storage quota, counting inputs at their size in the job
directory, results, estimator fields and the logs the runner stores, with no way around it."""

import io
import os
import zlib
from functools import partial
from typing import Any

import orjson
import pytest

from server.app import create_app
from server.database.sql import query
from server.editor import convert
from server.jobs.verdicts import CUT, SHORT_LOG
from tests.disk import KIB, big_files, disk_usage, exists
from tests.helpers import (
    EDITOR,
    KEY,
    eventually,
    login,
    payload,
    set_key,
    states_are,
    submit,
)


async def test_submission_past_the_quota_is_413(aiohttp_client, make_config, conn) -> None:
    # About 1240 KiB counted per submission of 800 KiB of hex: 440 KiB stored (zlib), and the
    # 800 KiB its job directory holds.
    quota = 1600 * KIB
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": quota})))
    await login(client)
    await submit(client, payload(input_files=big_files(2, 400 * KIB)))
    response = await client.post("/jobs/direct", json=payload(input_files=big_files(2, 400 * KIB)))
    status, body = response.status, await response.json()
    assert status == 413
    assert body["message"].startswith("Storage quota exceeded: ")
    assert body["message"].endswith(f"the quota is {quota}")
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 1


def spaces(size: int) -> dict[str, str]:
    """Input files of `size` bytes of spaces (and beam.dat): a few KiB once compressed."""
    return {"beam.dat": "NSTAT 100\n", "pad.dat": " " * size}


def counted(body: dict[str, Any], written: int, converted: dict[str, str] | None = None) -> int:
    """What the quota counts for a submission of `body`: its row (title, 256 bytes, 128 a task),
    its input compressed (and the files converted from it), and the `written` bytes its input
    takes in a job directory."""
    stored = [body.get("input_files") or body["input_json"], *([converted] if converted else [])]
    packed = sum(len(zlib.compress(orjson.dumps(value))) for value in stored)
    return len(body["title"].encode()) + 256 + 128 * body["ntasks"] + packed + written


def quota_exceeded(used: int, quota: int) -> dict[str, str]:
    return {
        "message": f"Storage quota exceeded: {used} bytes of inputs and results, the quota is {quota}"
    }


async def post_submission(client, body: dict[str, Any]) -> Any:
    """POST /jobs/direct with a body of any size (json= warns above 1 MiB)."""
    data = io.BytesIO(orjson.dumps(body))
    headers = {"Content-Type": "application/json"}
    return await client.post("/jobs/direct", data=data, headers=headers)


async def stored_rows(conn) -> list[int]:
    tables = ("simulations", "inputs", "tasks")
    return [await conn.fetchval(f"SELECT count(*) FROM {table}") for table in tables]


async def test_input_files_count_at_their_size_in_the_job_directory(
    aiohttp_client, make_config, conn, tmp_path
) -> None:
    """Input files stay uncompressed in `<job dir>/input/` for days after the end: 20
    submissions of compressible files left 1.2 GB of job directories under a quota that counted
    4.1 MiB. They count at their size there, in addition to their compressed rows."""
    quota, work_dir = 1024 * KIB, tmp_path / "work"
    runner = {"kind": "local", "command": "sleep 1000", "grace_period": 0.5}
    config = make_config(jobs={"user_quota": quota}, runner={**runner, "work_dir": str(work_dir)})
    client = await aiohttp_client(create_app(config))
    await login(client)
    too_big = payload(input_files=spaces(3 * 1024 * KIB), ntasks=1)
    response = await post_submission(client, too_big)
    used = counted(too_big, 10 + 3 * 1024 * KIB)
    assert (response.status, await response.json()) == (413, quota_exceeded(used, quota))
    assert await stored_rows(conn) == [0, 0, 0]
    assert list(work_dir.glob("*")) == []
    body = payload(input_files=spaces(600 * KIB), ntasks=1)
    job_id = await submit(client, body)
    await eventually(partial(exists, work_dir / job_id / "task_1" / "pad.dat"))
    size = disk_usage(work_dir / job_id / "input")
    response = await post_submission(client, body)  # fits compressed: a few KiB
    assert (response.status, await response.json()) == (
        413,
        quota_exceeded(2 * counted(body, size), quota),
    )
    assert await stored_rows(conn) == [1, 1, 1]


@pytest.mark.parametrize("converter", ["", "site-convert input.json ."])
async def test_editor_inputs_count_at_their_size_in_the_job_directory(
    aiohttp_client, make_config, conn, converter
) -> None:
    """An editor project's job directory holds the files converted from it, or the project as
    input.json for an operator's converter: they count at that size too."""
    config = make_config(jobs={"user_quota": 1}, runner={"kind": "none", "converter": converter})
    client = await aiohttp_client(create_app(config))
    await login(client)
    body = payload(EDITOR)  # 10000 primaries over 4 tasks
    project = body["input_json"]
    files = None if converter else convert(project, 2500)
    size = (
        len(orjson.dumps(project))
        if converter
        else sum(len(text.encode()) for text in files.values())
    )
    response = await client.post("/jobs/direct", json=body)
    assert (response.status, await response.json()) == (
        413,
        quota_exceeded(counted(body, size, files), 1),
    )
    assert await stored_rows(conn) == [0, 0, 0]


async def test_results_past_the_quota_are_413(aiohttp_client, make_config, conn) -> None:
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 300 * KIB})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    values = [int.from_bytes(os.urandom(4)) for _ in range(100_000)]  # about 500 KB stored
    pages = [{"metadata": {"page_number": 1, "name": "big"}, "data": {"values": values}}]
    body = {
        "simulation_id": job_id,
        "update_key": KEY,
        "estimators": [{"name": "z", "pages": pages}],
    }
    response = await client.post("/results", data=io.BytesIO(orjson.dumps(body)))
    assert response.status == 413
    assert (await response.json())["message"].startswith("Storage quota exceeded: ")
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_titles_are_not_a_way_around_the_quota(aiohttp_client, make_config, conn) -> None:
    quota = 100 * KIB
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": quota})))
    await login(client)
    title = os.urandom(1024 * KIB).hex()  # 2 MiB that do not compress away
    for _ in range(3):
        body = io.BytesIO(orjson.dumps(payload(title=title)))
        response = await client.post(
            "/jobs/direct", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status in (400, 413), await response.text()
    stored = await conn.fetchval("SELECT coalesce(sum(octet_length(title)), 0) FROM simulations")
    assert stored <= quota


async def test_tasks_are_not_a_way_around_the_quota(aiohttp_client, make_config, conn) -> None:
    """A submission of a few hundred bytes makes up to `jobs.max_ntasks` task rows (about 100
    bytes each with their index): they take disk like inputs do, so they count."""
    quota = 300 * KIB
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": quota})))
    await login(client)
    statuses = set()
    for _ in range(10):
        response = await client.post("/jobs/direct", json=payload(ntasks=1000))
        statuses.add(response.status)
    rows = await conn.fetchval("SELECT count(*) FROM tasks")
    assert rows * 100 <= quota, f"{rows} task rows stored, answers {sorted(statuses)}"


async def test_estimator_fields_count_against_the_quota(aiohttp_client, make_config, conn) -> None:
    """An estimator's own fields (`metadata`...) are results too, stored as sent (not
    compressed): an upload of them past the quota is 413 like one of pages."""
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 300 * KIB})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    note = os.urandom(400 * KIB).hex()  # 800 KB stored as is
    body = {
        "simulation_id": job_id,
        "update_key": KEY,
        "estimators": [{"name": "z", "metadata": {"note": note}, "pages": []}],
    }
    response = await client.post("/results", data=io.BytesIO(orjson.dumps(body)))
    assert response.status == 413
    assert (await response.json())["message"].startswith("Storage quota exceeded: ")
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


def _names(n: int) -> list[str]:
    return [f"{n}-{i:04d}-" + "x" * 240 for i in range(900)]  # 222 KB of names


# What a worker may store besides pages: (path, body of the n-th upload, what it stored).
WORKER_UPLOADS = {
    "log files": (
        "/logfiles",
        lambda n: {"logfiles": {f"log_{n}": os.urandom(100 * KIB).hex()}},  # 200 KB each
        "SELECT coalesce(sum(octet_length(content)), 0) FROM logfiles",
    ),
    "estimator names": (
        "/results",
        lambda n: {"estimators": [{"name": name, "pages": []} for name in _names(n)]},
        "SELECT coalesce(sum(octet_length(name)), 0) FROM estimators",
    ),
    "log file names": (
        "/logfiles",
        lambda n: {"logfiles": dict.fromkeys(_names(n), "")},
        "SELECT coalesce(sum(octet_length(name)), 0) FROM logfiles",
    ),
}


@pytest.mark.parametrize("what", WORKER_UPLOADS)
async def test_worker_uploads_are_no_way_around_the_quota(
    aiohttp_client, make_config, conn, what
) -> None:
    """Whoever holds an update key (an HPC job's environment holds it) could store without end
    what the quota did not count: log files (256 MiB a request, under any names), and names of
    estimators or log files with nothing else (names and rows take disk too)."""
    path, body_of, stored = WORKER_UPLOADS[what]
    quota = 300 * KIB
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": quota})))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    statuses = []
    for n in range(4):
        body = {"simulation_id": job_id, "update_key": KEY, **body_of(n)}
        response = await client.post(path, data=io.BytesIO(orjson.dumps(body)))
        statuses.append(response.status)
        if response.status == 413:
            assert (await response.json())["message"].startswith("Storage quota exceeded: ")
    assert statuses == [202, 413, 413, 413]
    assert await conn.fetchval(stored) <= quota


# What the quota counts (README, jobs.user_quota), read from every row: the reference the quota
# check must agree with, however it gets there.
EVERYTHING_STORED = """
SELECT (SELECT coalesce(sum(octet_length(title) + 256 + 128 * ntasks), 0) FROM simulations
         WHERE user_id = $1)
     + (SELECT coalesce(sum(octet_length(i.data) + coalesce(octet_length(i.files), 0)
                            + i.disk_size), 0)
        FROM inputs i JOIN simulations s ON s.id = i.simulation_id WHERE s.user_id = $1)
     + (SELECT coalesce(sum(octet_length(p.data) + octet_length(p.name)
                            + 4 * coalesce(cardinality(p.dimensions), 0) + 128), 0) FROM pages p
        JOIN estimators e ON e.id = p.estimator_id JOIN simulations s ON s.id = e.simulation_id
        WHERE s.user_id = $1)
     + (SELECT coalesce(sum(octet_length(e.name) + octet_length(e.fields) + 64), 0)
        FROM estimators e JOIN simulations s ON s.id = e.simulation_id WHERE s.user_id = $1)
     + (SELECT coalesce(sum(octet_length(l.name) + octet_length(l.content) + 64), 0)
        FROM logfiles l JOIN simulations s ON s.id = l.simulation_id WHERE s.user_id = $1)
"""


def rows_read(plan: dict[str, Any], counts: dict[str, int] | None = None) -> dict[str, int]:
    """Rows each table's scans returned in an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    counts = {} if counts is None else counts
    if "Relation Name" in plan:
        rows = plan["Actual Rows"] * plan.get("Actual Loops", 1)
        counts[plan["Relation Name"]] = counts.get(plan["Relation Name"], 0) + int(rows)
    for child in plan.get("Plans", []):
        rows_read(child, counts)
    return counts


async def test_the_quota_is_checked_without_reading_every_stored_page(
    aiohttp_client, make_config, conn
) -> None:
    """Every submission and worker upload checks the quota while it holds the user's row lock.
    Reading every page and log file the user ever stored made that check grow with the user's
    history: 300 ms a check for 20,000 simulations with 200,000 pages, and 100 log uploads of
    one job took 30 s, holding the pool's connections (another user's poll waited 28 s)."""
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 100 << 20})))
    await login(client)
    for _ in range(2):
        job_id = await submit(client)
        await set_key(conn, job_id)
        pages = [{"page_number": n, "data": {"values": [n]}} for n in range(1000)]
        uploads = {
            "/results": {"estimators": [{"name": "z", "pages": pages}]},
            "/logfiles": {"logfiles": {f"log_{n}": "x" * n for n in range(1000)}},
        }
        for path, part in uploads.items():
            body = {"simulation_id": job_id, "update_key": KEY, **part}
            response = await client.post(path, json=body)
            assert response.status == 202, await response.text()
    user_id = await conn.fetchval("SELECT id FROM users")
    assert await conn.fetchval(query("stored_bytes"), user_id) == await conn.fetchval(
        EVERYTHING_STORED, user_id
    )
    plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query("stored_bytes"), user_id)
    read = rows_read(orjson.loads(plan)[0]["Plan"])
    assert read.keys().isdisjoint({"pages", "logfiles", "estimators"}), read


async def test_logs_the_runner_stores_for_a_failed_task_count_against_the_quota(
    start_app, conn
) -> None:
    """The local runner stores the tail of a worker's output when it fails a task whose worker
    died (up to 64 KiB a task, 1000 tasks a job): that log counts against the quota like a
    worker's own log files (README, jobs.user_quota)."""
    client, _, _ = await start_app("crash")
    job_id = await submit(client, payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 2
    user_id = await conn.fetchval("SELECT id FROM users")
    assert await conn.fetchval(query("stored_bytes"), user_id) == await conn.fetchval(
        EVERYTHING_STORED, user_id
    )


@pytest.mark.parametrize("quota", [0, 64 * KIB])
async def test_the_runner_s_logs_count_against_the_quota_cut_when_it_is_used_up(
    aiohttp_client, make_config, conn, tmp_path, quota
) -> None:
    """A task whose process ends without a final state gets its output's last 64 KiB as the log
    `task_<n>_output`, stored by the runner: a 1,000-task job took some 64 MB past its owner's
    quota so. Past it, each such log keeps its first and last KiB (the verdict stands)."""
    script = tmp_path / "noisy.sh"
    script.write_text("#!/bin/sh\necho start\nhead -c 70000 /dev/zero | tr '\\0' x\nexit 1\n")
    script.chmod(0o755)
    runner = {"kind": "local", "command": str(script), "grace_period": 0.5, "sandbox": "off"}
    config = make_config(jobs={"user_quota": quota}, runner={**runner, "work_dir": str(tmp_path)})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client, payload(input_files=spaces(KIB), ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    logs = dict(await conn.fetch("SELECT name, content FROM logfiles ORDER BY name"))
    assert sorted(logs) == ["task_1_output", "task_2_output"]
    for text in logs.values():
        if quota:
            assert len(text) == SHORT_LOG + len(CUT) and CUT in text
        else:
            assert len(text) >= 64 * KIB
        assert text.endswith("x" * 100)
    used = await conn.fetchval("SELECT sum(stored_bytes) FROM simulations")
    assert (used < quota) if quota else (used > 128 * KIB)
