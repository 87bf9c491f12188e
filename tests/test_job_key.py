"""`run.py job-key JOB_ID`: a new update key for an external dispatcher (runner.kind = "none")."""

from server.app import create_app
from tests.conftest import login
from tests.jobs_support import post, record_jobs, submit
from tests.test_cli import run_py


async def test_job_key_rotates_the_key(database_url, conn, aiohttp_client, make_config):
    app = create_app(make_config())
    recorder = record_jobs(app)
    client = await aiohttp_client(app)
    await login(client)
    job_id = await submit(client)
    env = {"DATABASE_URL": database_url, "YAPTIDE_RUNNER_KIND": "none"}
    result = run_py("job-key", job_id, env=env)
    key = result.stdout.strip()
    assert (result.returncode, result.stderr, len(key)) == (0, "", 43)
    update = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    old = {**update, "update_key": recorder.key(job_id)}
    assert await post(client, "/tasks", old, 403) == {"message": "Invalid update key"}
    assert await post(client, "/tasks", {**update, "update_key": key}) == {
        "message": "Task updated"
    }

    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    result = run_py("job-key", job_id, env=env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"No unfinished simulation '{job_id}'\n"


def test_job_key_needs_kind_none(database_url):
    result = run_py("job-key", "some-job", env={"DATABASE_URL": database_url})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "job-key needs runner.kind = \"none\" (it is 'local': its workers hold the key, and a "
        "new one would cut them off)\n"
    )
