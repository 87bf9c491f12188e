"""Disk is bounded. One copy of a simulation's input however many tasks; job directories go with
their simulation and some time after it ended; a per-user storage quota."""

import asyncio
import io
import os
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from server.app import create_app
from server.config import ConfigError
from server.config_loader import load_config
from server.database.sql import query
from server.editor import convert
from server.keys import POOL
from server.runner.cleanup import sweep
from tests.helpers import (
    EDITOR,
    KEY,
    eventually,
    job_dir_of,
    login,
    migrated,
    payload,
    set_key,
    small_filesystem,
    states_are,
    status,
    submit,
)

KIB = 1024


def big_files(count: int, size: int) -> dict[str, str]:
    """`count` input files of `size` bytes each (random hex, so they do not compress away)."""
    files = {"beam.dat": "NSTAT 100\n"}
    for n in range(count):
        files[f"part{n}.dat"] = os.urandom(size // 2).hex()
    return files


async def gone(path: Path) -> bool:
    return not path.exists()


def disk_usage(directory: Path) -> int:
    """Bytes of the regular files under `directory`, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in directory.rglob("*"):
        info = path.lstat()
        if path.is_file() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


async def test_one_copy_of_the_input_for_all_tasks(start_app, conn) -> None:
    client, _, config = await start_app("complete")
    files = big_files(6, 150 * KIB)  # under aiohttp's 1 MiB single-write warning
    job_id = await submit(client, payload(input_files=files, ntasks=20))
    job_dir = job_dir_of(config, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "go").touch()  # the fake workers finish at once
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=90)
    for n in range(1, 21):
        task_files = {p.name: p.read_text() for p in (job_dir / f"task_{n}").iterdir()}
        assert {name: task_files[name] for name in files} == files  # each task sees them all
    input_size = sum(len(text) for text in files.values())
    assert input_size <= disk_usage(job_dir) < 2 * input_size  # 20 copies before


async def test_deleting_a_simulation_removes_its_job_directory(start_app, conn) -> None:
    client, _, config = await start_app("complete")
    job_id = await submit(client, payload(ntasks=2))
    job_dir = job_dir_of(config, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "go").touch()
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    assert (job_dir / "task_2").is_dir()
    response = await client.delete(f"/user/simulations?job_id={job_id}")
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    assert not job_dir.exists()


async def test_job_directories_removed_some_time_after_the_end(
    aiohttp_client, make_config, conn
) -> None:
    config = make_config(runner={"kind": "none", "job_dir_ttl": 0.5})
    client = await aiohttp_client(create_app(config))
    await login(client)
    ended, running = await submit(client), await submit(client)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    await conn.execute(
        "UPDATE simulations SET job_state = 'COMPLETED', end_time = $2 WHERE job_id = $1",
        ended,
        long_ago,
    )
    deleted = await deleted_job_id(conn)  # a simulation deleted while the server was down
    directories = {name: job_dir_of(config, name) for name in (ended, running, deleted)}
    for directory in directories.values():
        (directory / "task_1").mkdir(parents=True)
    await eventually(partial(gone, directories[ended]), timeout=10)
    await eventually(partial(gone, directories[deleted]), timeout=10)
    assert directories[running].exists()


async def test_without_a_ttl_only_directories_of_deleted_simulations_are_swept(
    aiohttp_client, make_config, conn
) -> None:
    """job_dir_ttl = 0 keeps a job directory until its simulation is deleted: one deleted while
    the server was down is still swept at start."""
    config = make_config(runner={"kind": "none", "job_dir_ttl": 0})
    deleted = await deleted_job_id(conn)
    (job_dir_of(config, deleted) / "task_1").mkdir(parents=True)
    client = await aiohttp_client(create_app(config))
    await login(client)
    ended = await submit(client)
    long_ago = datetime.now(UTC) - timedelta(days=365)
    await conn.execute(
        "UPDATE simulations SET job_state = 'COMPLETED', end_time = $2 WHERE job_id = $1",
        ended,
        long_ago,
    )
    (job_dir_of(config, ended) / "task_1").mkdir(parents=True)
    await eventually(partial(gone, job_dir_of(config, deleted)), timeout=10)
    assert await sweep(config, client.server.app[POOL]) == []
    assert job_dir_of(config, ended).exists()


async def test_a_second_deployment_sharing_work_dir_leaves_the_first_ones_jobs_alone(
    aiohttp_client, make_config, conn, tmp_path, scratch_url
) -> None:
    """Two deployments with databases of their own (say staging and production) share one
    work_dir (one service account, one scratch directory on a cluster): the second one's
    sweep, at its start, must not remove the job directory of the first one's simulation."""
    config = make_config(runner={"kind": "none", "work_dir": str(tmp_path / "scratch")})
    first = await aiohttp_client(create_app(config))
    await login(first)
    job_id = await submit(first)
    job_dir = tmp_path / "scratch" / job_id
    (job_dir / "task_1").mkdir(parents=True)
    await migrated(scratch_url)
    second = config.replace("database", url=scratch_url, data_dir=str(tmp_path / "second"))
    await aiohttp_client(create_app(second))
    await asyncio.sleep(0.5)  # its first sweep runs at its start
    assert (await status(first, job_id))["job_state"] == "PENDING"
    assert (job_dir / "task_1").is_dir()
    # Deleted behind the first deployment's back (a user's deletion cascading): its sweep goes.
    await conn.execute("DELETE FROM simulations WHERE job_id = $1", job_id)
    assert await sweep(config, first.server.app[POOL]) == [job_id]


async def deleted_job_id(conn: asyncpg.Connection) -> str:
    """The job_id of a simulation deleted (as the database remembers it)."""
    job_id = str(uuid.uuid4())
    await conn.execute("INSERT INTO deleted_job_ids (job_id) VALUES ($1)", job_id)
    return job_id


def test_a_job_dir_ttl_past_what_postgresql_can_date_is_refused() -> None:
    """1e12 s (31 700 years) passed the check, then every hourly sweep failed ("timestamp out of
    range") and no directory was ever removed again. Now one line naming the key."""
    with pytest.raises(ConfigError) as refused:
        load_config(env={"YAPTIDE_RUNNER_JOB_DIR_TTL": "1e12"})
    assert str(refused.value) == (
        "YAPTIDE_RUNNER_JOB_DIR_TTL: must be at most 100 years (got 1000000000000.0)"
    )


async def test_the_longest_job_dir_ttl_keeps_the_sweep_working(
    aiohttp_client, make_config, conn
) -> None:
    """With 100 years, the directory of a simulation deleted while the server was down still goes."""
    config = make_config(runner={"kind": "none", "job_dir_ttl": 100 * 365.25 * 24 * 3600})
    client = await aiohttp_client(create_app(config))
    deleted = job_dir_of(config, await deleted_job_id(conn))
    (deleted / "task_1").mkdir(parents=True)
    await sweep(config, client.server.app[POOL])
    assert not deleted.exists()


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


async def exists(path: Path) -> bool:
    return path.exists()


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


async def test_sweep_leaves_what_is_not_a_job_directory(
    aiohttp_client, make_config, conn, tmp_path
) -> None:
    """runner.work_dir may be a directory the operator shares with other things (a scratch
    space, /tmp): only job directories (named by a job_id) are the sweep's to remove."""
    work_dir = tmp_path / "scratch"
    (work_dir / "results-2023").mkdir(parents=True)
    (work_dir / "results-2023" / "notes.txt").write_text("keep me")
    (work_dir / ".ssh").mkdir()
    config = make_config(runner={"kind": "none", "work_dir": str(work_dir)})
    client = await aiohttp_client(create_app(config))
    await login(client)
    deleted = work_dir / await deleted_job_id(conn)  # a job directory whose simulation is gone
    deleted.mkdir()
    await sweep(config, client.server.app[POOL])
    assert not deleted.exists()
    assert (work_dir / "results-2023" / "notes.txt").read_text() == "keep me"
    assert (work_dir / ".ssh").is_dir()


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


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_inputs_that_do_not_fit_in_work_dir_leave_nothing_behind(start_app, conn) -> None:
    """Each task that found work_dir full left its half-written copy of the input
    (`input.<pid>.<uuid>`), which kept the file system full after the job had FAILED, until the
    job directory was swept days later."""
    with small_filesystem("512k") as directory:
        client, _, _ = await start_app("complete", work_dir=str(directory))
        job_id = await submit(client, payload(input_files=big_files(6, 150 * KIB), ntasks=3))
        await eventually(states_are(client, job_id, "FAILED", "FAILED"))
        assert disk_usage(directory) == 0


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
