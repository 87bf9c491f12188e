"""Editor projects at `POST /jobs/direct`: converted before anything is stored, the files kept
beside the project and handed to the workers as a files submission's would be."""

import pytest

from server.app import create_app
from server.editor import convert
from tests.helpers import EDITOR, login, payload, record_jobs, submit


@pytest.fixture
async def app_client(aiohttp_client, make_config, conn):
    """make(**runner) -> (client logged in as alice, recorder of the dispatched jobs)."""

    async def make(**runner):
        app = create_app(make_config(runner={"kind": "none", **runner}))
        recorder = record_jobs(app)
        client = await aiohttp_client(app)
        await login(client)
        return client, recorder

    return make


async def test_the_project_is_converted_at_submission(app_client):
    client, recorder = await app_client()
    project = payload(EDITOR)["input_json"]
    job_id = await submit(client, EDITOR)  # 10000 primaries over 4 tasks
    files = convert(project, 2500)
    job = recorder.jobs[job_id]
    assert (job.input_type, job.input, job.primaries) == ("files", files, (2500,) * 4)
    response = await client.get("/inputs", params={"job_id": job_id})
    assert await response.json() == {
        "message": "Inputs",
        "input_type": "editor",
        "input": project,
        "input_files": files,
    }
    assert sorted(files) == ["beam.dat", "detect.dat", "geo.dat", "mat.dat"]


async def test_uneven_primaries_write_the_smallest_share(app_client):
    client, recorder = await app_client()
    job_id = await submit(client, EDITOR, ntasks=15)  # 10 tasks of 667, 5 of 666
    assert (
        recorder.jobs[job_id].input["beam.dat"]
        == convert(payload(EDITOR)["input_json"], 666)["beam.dat"]
    )


@pytest.mark.parametrize(
    ("sim_type", "title"), [("fluka", "FLUKA"), ("geant4", "Geant4"), ("topas", "TOPAS")]
)
async def test_editor_projects_for_other_simulators_are_refused(app_client, conn, sim_type, title):
    client, recorder = await app_client()
    response = await client.post("/jobs/direct", json=payload(EDITOR, sim_type=sim_type))
    assert (response.status, await response.json()) == (
        400,
        {
            "message": f"editor projects can be run with SHIELD-HIT12A; for {title} submit input files"
        },
    )
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
    assert recorder.jobs == {}


async def test_too_few_primaries_for_the_tasks_is_refused(app_client, conn):
    client, _ = await app_client()
    response = await client.post(
        "/jobs/direct", json=payload(EDITOR, number_of_primaries=3, ntasks=4)
    )
    assert (response.status, await response.json()) == (
        400,
        {
            "message": "The project cannot be converted to SHIELD-HIT12A input: "
            "beam: the number of primaries per task must be at least 1"
        },
    )
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


@pytest.mark.parametrize("sim_type", ["shieldhit", "fluka"])
async def test_an_operator_converter_gets_the_project_as_before(app_client, sim_type):
    client, recorder = await app_client(converter="site-convert input.json .")
    project = payload(EDITOR)["input_json"]
    job_id = await submit(client, EDITOR, sim_type=sim_type)
    job = recorder.jobs[job_id]
    assert (job.input_type, job.input) == ("editor", project)
    response = await client.get("/inputs", params={"job_id": job_id})
    assert await response.json() == {"message": "Inputs", "input_type": "editor", "input": project}
