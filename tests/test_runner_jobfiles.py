"""What a job's own processes put in its job directory (which they can write, also in the
sandbox) cannot turn the server against files of its account: a link where the server writes a
task's output or reads it back, a FIFO there, a link in place of the job's input files
(server/runner/local/jobfiles.py)."""

import os

from server.runner.local.jobfiles import NOT_PLAIN, read_tail
from tests.helpers import eventually, job_dir_of, logfiles_of, payload, states_are, submit

CANNOT_WRITE = "The task's files could not be written in runner.work_dir: "


async def test_a_link_or_fifo_in_place_of_a_task_output_is_not_followed(start_app, conn, tmp_path):
    """Task 1 links the next task's output file to a file of the server's account and puts a
    FIFO in place of its own: the server wrote task 2's output over that file (emptying it), and
    waited for ever on the FIFO to read task 1's output back (its slot never freed, the server
    never stopped). Now task 1 fails with no output read, task 2 without starting, the file
    untouched."""
    victim = tmp_path / "authorized_keys"
    victim.write_text("the server's own\n")
    client, _, config = await start_app(f"plant log {victim}", slots=1)
    job_id = await submit(client, payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["FAILED", "FAILED"]
    assert victim.read_text() == "the server's own\n"
    logs = await logfiles_of(conn)
    assert logs["task_1_output"] == (
        "The worker exited with code 3 without reporting a final task state.\n\nLast output:\n"
    )
    assert logs["task_2_output"] == (f"{CANNOT_WRITE}task_2.log: Too many levels of symbolic links")
    assert not (job_dir_of(config, job_id) / "env_2.json").exists()  # task 2 never ran


async def test_a_hard_link_in_place_of_a_task_output_is_not_written(start_app, conn, tmp_path):
    """Task 1 hard-links the next task's output file to a file it can reach: the server would
    empty it and write task 2's output into it. It is refused as not a file of one link."""
    victim = tmp_path / "notes"
    victim.write_text("kept\n")
    client, _, config = await start_app(f"plant hardlink {victim}", slots=1)
    job_id = await submit(client, payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    assert victim.read_text() == "kept\n"
    logs = await logfiles_of(conn)
    assert logs["task_2_output"] == f"{CANNOT_WRITE}task_2.log: {NOT_PLAIN}"
    assert not (job_dir_of(config, job_id) / "env_2.json").exists()  # task 2 never ran


async def test_a_link_in_place_of_the_input_files_is_not_followed(start_app, conn, tmp_path):
    """Task 1 puts a link to a directory of the server's account in place of the job's input
    files: the next task got hard links to that directory's files (the signing secret, beside
    the job directories by default) in its own directory. Now it fails without starting."""
    secrets = tmp_path / "kept"
    secrets.mkdir()
    (secrets / "secret_key").write_text("not for tasks")
    client, _, config = await start_app(f"plant input {secrets}", slots=1)
    job_id = await submit(client, payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"))
    logs = await logfiles_of(conn)
    assert logs["task_2_output"] == f"{CANNOT_WRITE}input: Not a directory"
    task_2 = job_dir_of(config, job_id) / "task_2"
    assert not task_2.exists() or list(task_2.iterdir()) == []
    assert (secrets / "secret_key").stat().st_nlink == 1


def test_a_directory_in_place_of_an_output_reads_as_none_and_holds_no_descriptor(tmp_path):
    """A task's output file replaced by a directory: read back as no output, as a FIFO or a
    link is, and the descriptor opened on it closed (it stayed open: one per task, until the
    server could open no more files or connections)."""
    (tmp_path / "task_1.log").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    assert [read_tail(tmp_path / "task_1.log", 1024) for _ in range(100)] == [b""] * 100
    assert len(os.listdir("/proc/self/fd")) <= before
