"""The UI's example project from `POST /jobs/direct` to COMPLETED through the built-in worker.

The local runner runs `python -m server.worker` per task; the fake SHIELD-HIT12A of the worker
tests replays a real run and leaves one result file per output of the project, named as
SHIELD-HIT12A names them (`<output>_<task>.bdo`). Those files are copies of one real result
(not a run of this project), so their pages are not the project's quantities; what is checked
is that the simulator got the converted files and that the estimators come back named after
the project's outputs, in the project's order (not alphabetically).
"""

import shutil

from server.editor import convert
from tests.fakes.simulators import AVERAGING, write_fake
from tests.helpers import (
    EDITOR,
    eventually,
    job_dir_of,
    payload,
    results_of,
    seen_by_simulator,
    start_worker_app,
    states_are,
    submit,
)

OUTPUTS = ["z_profile", "yz_profile", "entrance", "peak"]  # the project's outputs, in order


async def test_the_example_project_runs_to_completed(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn, tmp_path
):
    real = AVERAGING / "normalisation-5_aggregation-mean_0001.bdo"
    (tmp_path / "replay").mkdir()
    replays = [shutil.copyfile(real, tmp_path / "replay" / f"{name}.bdo") for name in OUTPUTS]
    fake = write_fake(tmp_path / "shieldhit", "shieldhit", {"*": replays}, seed_suffix=True)
    port = unused_tcp_port_factory()
    client, _, config = await start_worker_app(
        aiohttp_server, aiohttp_client, port, make_config, {"shieldhit": str(fake)}
    )
    job_id = await submit(client, EDITOR, ntasks=2)
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=90)
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED"] * 2

    files = convert(payload(EDITOR)["input_json"], 5000)
    job_dir = job_dir_of(config, job_id)
    for task_id in (1, 2):
        seen = seen_by_simulator(job_dir, task_id)
        assert seen["files"] == sorted(files)  # the converted files, and nothing else
        assert seen["argv"][1:5] == ["-n", "5000", "-N", str(task_id)]
        task_dir = job_dir / f"task_{task_id}"
        assert {name: (task_dir / name).read_text() for name in files} == files

    results = await results_of(client, job_id)
    assert [estimator["name"] for estimator in results["estimators"]] == OUTPUTS
    response = await client.get("/estimators", params={"job_id": job_id})
    assert [e["name"] for e in (await response.json())["estimators"]] == OUTPUTS
