"""Disk is bounded: one copy of a simulation's input however many tasks; job directories go with
their simulation and some time after it ended (the sweep), and only job directories."""

import asyncio
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import pytest

from server.app import create_app
from server.config import ConfigError
from server.config_loader import load_config
from server.keys import POOL
from server.runner.cleanup import sweep
from tests.disk import KIB, big_files, disk_usage, gone
from tests.helpers import (
    eventually,
    job_dir_of,
    login,
    migrated,
    payload,
    small_filesystem,
    states_are,
    status,
    submit,
)


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


async def completed_job(start_app, ntasks: int) -> tuple:
    """(client, job_id, job directory) of a job of `ntasks` that the local runner COMPLETED."""
    client, _, config = await start_app("complete")
    job_id = await submit(client, payload(ntasks=ntasks))
    job_dir = job_dir_of(config, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "go").touch()  # the fake workers finish at once
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"))
    return client, job_id, job_dir


async def test_deleting_a_simulation_removes_its_job_directory(start_app, conn) -> None:
    client, job_id, job_dir = await completed_job(start_app, ntasks=2)
    assert (job_dir / "task_2").is_dir()
    response = await client.delete(f"/user/simulations?job_id={job_id}")
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    assert not job_dir.exists()


def deep_tree(directory, depth: int) -> None:
    """`depth` directories nested in `directory` (made through descriptors: their path is far
    longer than any a system call takes)."""
    fd = os.open(directory, os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    os.close(fd)


async def test_a_job_directory_too_deep_for_shutil_is_removed_too(start_app, conn) -> None:
    """A job's processes left 3,000 nested directories (seconds of work): shutil.rmtree, which
    recurses once per level, raised RecursionError (not an OSError its ignore_errors covers),
    so the directory stayed, and the sweep stopped at it every time."""
    client, job_id, job_dir = await completed_job(start_app, ntasks=1)
    await asyncio.to_thread(deep_tree, job_dir / "task_1", 3000)
    try:
        response = await client.delete(f"/user/simulations?job_id={job_id}")
        assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
        assert not job_dir.exists()
    finally:  # pytest's own removal of old temporary directories would fail on it as well
        subprocess.run(["rm", "-rf", "--", str(job_dir)], check=True)


async def test_a_deletion_through_another_server_removes_the_job_directory_here(
    aiohttp_client, make_config, conn, tmp_path
) -> None:
    """A job directory is its runner's server's: a simulation deleted through another server on
    the same database (a `kind = "none"` one beside a local runner) kept it until this server's
    next sweep, up to an hour later."""
    here = make_config()
    first = await aiohttp_client(create_app(here))
    await login(first)
    job_id = await submit(first)
    job_dir = job_dir_of(here, job_id)
    (job_dir / "task_1").mkdir(parents=True)
    assert (await first.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    elsewhere = here.replace("database", data_dir=str(tmp_path / "elsewhere"))
    second = await aiohttp_client(create_app(elsewhere))
    account = {"username": "alice", "password": "password1"}
    assert (await second.post("/auth/login", json=account)).status == 202
    response = await second.delete("/user/simulations", params={"job_id": job_id})
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    await eventually(partial(gone, job_dir), timeout=5)


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
    # Deleted behind the first deployment's back (a user's deletion cascading): its listener
    # removes the directory, and its sweep too, when it missed that (made again here).
    await conn.execute("DELETE FROM simulations WHERE job_id = $1", job_id)
    await eventually(partial(gone, job_dir), timeout=5)
    (job_dir / "task_1").mkdir(parents=True)
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
