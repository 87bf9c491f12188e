"""The SLURM dispatcher's job files on this host, without a SLURM (no sbatch on PATH, or one
that refuses every job, so every submission is refused at once): where they go, that they go
with their simulation, and what happens when they cannot be written or are refused."""

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from server.app import create_app
from server.config import ClusterConfig
from server.keys import SLURM
from server.runner.slurm import dispatcher, sbatch
from server.runner.slurm.dispatcher import UNEXPECTED_TEXT
from server.runner.slurm.shell import Completed, LocalShell
from tests.helpers import (
    eventually,
    job_dir_of,
    logfiles_of,
    login,
    payload,
    pid_alive,
    states_are,
    status,
    submit,
)

REFUSAL = "sbatch: error: invalid partition specified: plgrid"


@pytest.fixture
def refusing_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH whose sbatch refuses every job as SLURM refuses an unknown partition."""
    bin_dir = tmp_path / "refusing-bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\necho "{REFUSAL}" >&2\necho "sbatch: error: Batch job submission failed" >&2\n'
        "exit 1\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


async def _gone(path: Path) -> bool:
    return not path.exists()


async def test_the_log_says_why_sbatch_refused_a_job(
    aiohttp_client, make_config, conn, refusing_sbatch, caplog
) -> None:
    """The user's log `slurm` holds sbatch's whole answer; the server's WARNING said only
    `sbatch refused the job:` (the header line of that text), not why."""
    config = make_config(runner={"kind": "slurm"})
    client = await aiohttp_client(create_app(config))
    await login(client)
    job_id = await submit(client, payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED"))
    # Its files, of no use now, are removed at once (on a cluster over SSH they stayed until
    # the hourly sweep, also after a delete: submit, be refused, delete, again, filled its disk).
    await eventually(lambda: _gone(job_dir_of(config, job_id)))
    assert await logfiles_of(conn) == {
        "slurm": f"sbatch refused the job:\n{REFUSAL}\nsbatch: error: Batch job submission failed"
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"job {job_id}: sbatch refused the job: {REFUSAL}" in warnings, warnings


async def test_job_files_that_cannot_be_written_fail_the_simulation(
    aiohttp_client, make_config, conn, tmp_path, no_sbatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = make_config(runner={"kind": "slurm", "work_dir": str(blocker / "jobs")})
    client = await aiohttp_client(create_app(config))
    await login(client)
    response = await client.post("/jobs/direct", json=payload())
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    await eventually(states_are(client, job_id, "FAILED"))
    logs = await logfiles_of(conn)
    assert logs["slurm"].startswith("The job could not be sent to SLURM: ")


async def test_an_unexpected_error_of_the_submission_fails_the_simulation(
    aiohttp_client, make_config, conn, no_sbatch, monkeypatch, caplog
) -> None:
    """The submission runs after the 202: a bug there (here, building the job's files raises)
    must not leave the simulation PENDING until the reconciler gives up on it (five minutes),
    nor go unseen: FAILED with the log `slurm`, the traceback in the server's log."""

    def broken(job: object) -> dict[str, bytes]:
        raise RuntimeError("a bug in building the job's files")

    monkeypatch.setattr(sbatch, "input_files", broken)
    client = await aiohttp_client(create_app(make_config(runner={"kind": "slurm"})))
    await login(client)
    response = await client.post("/jobs/direct", json=payload())
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    body = await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert len(body["job_tasks_status"]) >= 1
    assert await logfiles_of(conn) == {"slurm": UNEXPECTED_TEXT}
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == f"job {job_id}: sending it to SLURM failed"
    assert "a bug in building the job's files" in caplog.text


async def test_batch_job_directory_on_this_host_goes_with_its_simulation(
    aiohttp_client, make_config, conn, tmp_path, no_sbatch, monkeypatch
) -> None:
    # A [[clusters]] entry for this host's SLURM (no host), without a work_dir of its own.
    elsewhere = tmp_path / "server-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cluster = ClusterConfig("prometheus", "Prometheus (Cyfronet)")
    config = dataclasses.replace(make_config(slurm={"local_users": True}), clusters=(cluster,))
    client = await aiohttp_client(create_app(config))
    await login(client)
    response = await client.post(
        "/jobs/batch", json=payload(batch_options={"cluster_name": "prometheus"})
    )
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    await eventually(states_are(client, job_id, "FAILED"))  # sbatch: not found
    assert list(elsewhere.iterdir()) == []  # nothing in the server's current directory
    response = await client.delete("/user/simulations", params={"job_id": job_id})
    assert response.status == 200
    assert not job_dir_of(config, job_id).exists()  # removed here without `rm` on PATH


async def test_a_stopping_server_starts_no_submission_that_waited_for_its_turn(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch, caplog
) -> None:
    """close() gives the submissions in flight SUBMIT_GRACE to finish; one still waiting for its
    turn must not begin then (its sbatch would be cut off at the grace's end: a job in SLURM
    whose id nobody stored, running until the reconciler fails its simulation five minutes
    later). It stays PENDING, to the reconciler, as one that came in while stopping."""
    calls = tmp_path / "sbatch-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\necho sbatch >> {calls}\nsleep 1\necho $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(dispatcher, "SUBMITS_AT_ONCE", 1)
    monkeypatch.setattr(dispatcher, "SUBMIT_GRACE", 4.0)
    client = await aiohttp_client(create_app(make_config(runner={"kind": "slurm"})))
    await login(client)
    first = await submit(client, payload())
    second = await submit(client, payload())
    await eventually(lambda: asyncio.to_thread(calls.exists))
    await client.server.app[SLURM].close()  # the first's two sbatch take 2 s of the 4
    assert calls.read_text().splitlines() == ["sbatch", "sbatch"]
    stored = await conn.fetch(
        "SELECT s.job_id FROM slurm_jobs j JOIN simulations s ON s.id = j.simulation_id"
    )
    assert [row["job_id"] for row in stored] == [first]
    assert (await status(client, second))["job_state"] == "PENDING"
    assert await logfiles_of(conn) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["SLURM submissions left to the reconciler as the server stops: 1"]


async def test_a_submission_cancelled_before_its_turn_leaves_the_queue(
    aiohttp_client, make_config, conn, tmp_path, monkeypatch
) -> None:
    """README ("Submission"): the submissions waiting for their turn are bounded by
    jobs.max_unfinished per user. A cancel frees a place there: the cancelled one must not
    stay queued behind a stalled cluster, or submit-and-cancel grows the queue without end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "started"
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\ntouch {started}\nsleep 5\necho $$\n")  # a stalled cluster
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(dispatcher, "SUBMITS_AT_ONCE", 1)
    monkeypatch.setattr(dispatcher, "SUBMIT_GRACE", 0.1)
    config = make_config(runner={"kind": "slurm"}, jobs={"max_unfinished": 2})
    client = await aiohttp_client(create_app(config))
    await login(client)
    await submit(client, payload())
    await eventually(lambda: asyncio.to_thread(started.exists))
    for _ in range(5):
        job_id = await submit(client, payload())
        response = await client.delete("/jobs/direct", params={"job_id": job_id})
        assert response.status == 200, await response.text()
    submissions = client.server.app[SLURM]._submissions
    assert await eventually(lambda: asyncio.sleep(0, len(submissions) == 1), timeout=2)


async def test_a_command_that_ends_without_reading_its_input_gives_its_status() -> None:
    """sbatch reads the job's key from standard input: a command that ends before reading it
    all (sh finding no sbatch) gives its exit status and stderr, not an error of the pipe."""
    done = await LocalShell().run("echo 'no sbatch here' >&2; exit 127", stdin="k" * (1 << 20))
    assert done == Completed(127, "", "no sbatch here\n")


async def test_a_cancelled_command_ends_with_what_it_started(tmp_path) -> None:
    """A command cancelled (the server stops) or timed out is killed with every process it
    started: a child holding its output open (an sbatch waiting for a stalled controller) made
    the cancel wait for that child, and a stopping server with it (a test run hung 10 min)."""
    pid_file = tmp_path / "child"
    running = asyncio.ensure_future(LocalShell().run(f"sleep 60 & echo $! > {pid_file}; wait"))
    await eventually(lambda: asyncio.sleep(0, pid_file.exists() and pid_file.read_text()))
    child = int(pid_file.read_text())
    running.cancel()
    async with asyncio.timeout(5):  # before: 60 s, until the child ended
        with pytest.raises(asyncio.CancelledError):
            await running
    await eventually(lambda: asyncio.sleep(0, not pid_alive(child)), timeout=5)
