"""The worker's parts on their own: settings, progress parsing, command lines and FLUKA cards,
the retrying client against a real server, merging, and the page shape."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from server.config import PROJECT_DIR
from server.worker import progress as prog
from server.worker.client import JobEnded, Rejected, ServerClient, Unreachable
from server.worker.estimators import MergeError, merge_files
from server.worker.merge import merge_job
from server.worker.outputs import in_output_order
from server.worker.settings import SettingsError, child_environment, load
from server.worker.simulators import (
    TaskFailed,
    fluka_input,
    set_fluka_primaries,
    shieldhit_command,
)
from server.worker.task import keep_results
from tests.fakes.simulators import AVERAGING, REPLAYS
from tests.helpers import RESULTS_FIXTURE, read_json

ENV = {
    "YAPTIDE_URL": "http://127.0.0.1:1/",
    "YAPTIDE_SIMULATION_ID": "job",
    "YAPTIDE_UPDATE_KEY": "k" * 43,
    "YAPTIDE_JOB_DIR": "/tmp/job",
    "YAPTIDE_SIM_TYPE": "shieldhit",
    "YAPTIDE_TASK_ID": "3",
    "YAPTIDE_PRIMARIES": "250",
}


def test_settings_from_environment():
    settings = load(ENV)
    assert (settings.url, settings.task_id, settings.primaries) == ("http://127.0.0.1:1", 3, 250)
    assert (settings.shieldhit, settings.fluka, settings.converter) == ("shieldhit", "rfluka", "")
    assert (settings.progress_interval, settings.retry_timeout) == (2.0, 600.0)
    assert settings.task_dir == Path("/tmp/job/task_3")
    assert "k" * 43 not in repr(settings)
    assert "YAPTIDE_UPDATE_KEY" not in child_environment(ENV)
    merge = load(
        {k: v for k, v in ENV.items() if k not in ("YAPTIDE_TASK_ID", "YAPTIDE_PRIMARIES")},
        merge=True,
    )
    assert (merge.task_id, merge.primaries) == (0, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"YAPTIDE_UPDATE_KEY": ""}, "YAPTIDE_UPDATE_KEY is not set"),
        ({"YAPTIDE_TASK_ID": "0"}, "YAPTIDE_TASK_ID must be at least 1, got '0'"),
        ({"YAPTIDE_PRIMARIES": "many"}, "YAPTIDE_PRIMARIES must be an integer, got 'many'"),
        (
            {"YAPTIDE_RUNNER_PROGRESS_INTERVAL": "0"},
            "YAPTIDE_RUNNER_PROGRESS_INTERVAL must be greater than 0, got '0'",
        ),
    ],
)
def test_bad_settings(changes, message):
    with pytest.raises(SettingsError) as error:
        load({**ENV, **changes})
    assert str(error.value) == message


def test_worker_command_line():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR)}
    run = [sys.executable, str(PROJECT_DIR / "run.py"), "worker"]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot start: YAPTIDE_URL is not set" in done.stderr
    done = subprocess.run([*run, "twice"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'twice'" in done.stderr


def test_shieldhit_progress_from_real_output():
    progress = prog.Progress()
    for line in (REPLAYS / "minimal" / "stdout.txt").read_text().splitlines(keepends=True):
        prog.read_shieldhit_line(progress, line)
    assert (progress.simulated, progress.estimated_time, progress.version) == (20, 0, 20)
    prog.read_shieldhit_line(
        progress, "  Primary particle no.   30  ETR:   1 hour  2 minutes  3 seconds"
    )
    assert (progress.simulated, progress.estimated_time) == (30, 3723)


def test_fluka_progress_rows():
    progress = prog.Progress()
    parser = prog.FlukaOutParser(progress)
    row = "     980000      20000      20000     1.8515483E-04     1.0000000E+30     44182  "
    parser.feed(row)  # before the table: ignored
    assert progress.version == 0
    for line in [" 1NUMBER OF BEAM    BEAM PARTICLES", row, " NEXT SEEDS:  1 2 3 4 5 6", "x y z"]:
        parser.feed(line)
    assert (progress.simulated, progress.estimated_time) == (980000, 4)


def test_tail_keeps_the_end():
    tail = prog.Tail()
    for n in range(20000):
        tail.add(f"line {n}\n")
    text = tail.text()
    assert text.endswith("line 19999\n") and len(text) <= prog.TAIL_BYTES


def test_shieldhit_command(tmp_path):
    for name in ("beam.dat", "geo.dat", "mat.dat"):
        shutil.copy(AVERAGING / name, tmp_path)
    with pytest.raises(
        TaskFailed, match=re.escape("SHIELD-HIT12A input files are missing: detect.dat.")
    ):
        shieldhit_command("/bin/true", tmp_path, 100, 3)
    shutil.copy(AVERAGING / "detect.dat", tmp_path)
    argv = shieldhit_command("/bin/true", tmp_path, 100, 3)
    assert argv == ["/bin/true", "-n", "100", "-N", "3", str(tmp_path)]


def test_fluka_start_card(tmp_path):
    path = tmp_path / "sim.inp"
    start = f"{'START':<10}{'20':>10}{'':>10}{'30.':>10}"  # WHAT(1) and WHAT(3) set
    path.write_text(f"TITLE\nx\n{start}\nSTOP\n")
    set_fluka_primaries(path, 1234567)
    assert path.read_text() == f"TITLE\nx\n{'START':<10}{'1234567':>10}{'':>10}{'30.':>10}\nSTOP\n"
    path.write_text("TITLE\nSTOP\n")
    with pytest.raises(TaskFailed, match=re.escape("The FLUKA input sim.inp has no START card.")):
        set_fluka_primaries(path, 5)
    (tmp_path / "other.inp").touch()
    with pytest.raises(TaskFailed) as error:
        fluka_input(tmp_path)
    assert str(error.value) == (
        "A FLUKA simulation needs exactly one input file; found several .inp files "
        "(other.inp, sim.inp)."
    )


@pytest.fixture
async def answering(aiohttp_server):
    """A server answering POST /<status> with that status, 503 twice first for /flaky."""
    calls: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        calls.append(request.path)
        assert request.headers["Authorization"] == "Bearer " + "k" * 43
        if request.path == "/flaky":
            code = 503 if calls.count("/flaky") <= 2 else 202
        else:
            code = int(request.path.strip("/"))
        return web.json_response({"message": f"answer {code}"}, status=code)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")), calls


async def test_client_retries_and_refusals(answering):
    url, calls = answering
    settings = load({**ENV, "YAPTIDE_URL": url, "YAPTIDE_RUNNER_RETRY_TIMEOUT": "5"})
    async with aiohttp.ClientSession() as session:
        client = ServerClient(settings, session)
        await client.post("/flaky", {})
        assert calls == ["/flaky"] * 3
        with pytest.raises(JobEnded, match="POST /409 was refused with 409: answer 409"):
            await client.post("/409", {})
        with pytest.raises(Rejected, match="POST /400 was refused with 400: answer 400"):
            await client.post("/400", {})
        assert calls.count("/400") == 1  # a 4xx is not retried


async def test_client_gives_up(unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}"
    settings = load({**ENV, "YAPTIDE_URL": url, "YAPTIDE_RUNNER_RETRY_TIMEOUT": "0.6"})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(Unreachable, match=r"POST /tasks failed for 0.6 s, last: Client"):
            await ServerClient(settings, session).update_task(task_state="RUNNING")


def test_merge_needs_completed_tasks(tmp_path):
    with pytest.raises(MergeError, match="No task left result files in the job directory"):
        merge_job(tmp_path, "shieldhit")


def test_merge_refuses_files_that_do_not_match(tmp_path):
    one = tmp_path / "a" / "x_0001.bdo"
    two = tmp_path / "b" / "x_0002.bdo"
    for path, source in (
        (one, REPLAYS / "minimal" / "mesh.bdo"),
        (two, AVERAGING / "normalisation-5_aggregation-mean_0001.bdo"),
    ):
        path.parent.mkdir()
        shutil.copy(source, path)
    with pytest.raises(
        MergeError, match=re.escape("b/x_0002.bdo has 2 pages where the other tasks have 1")
    ):
        merge_files([one, two], "shieldhit", "x")


def test_pages_have_the_platform_shape(tmp_path):
    keep_results([REPLAYS / "mesh2d" / "ex_yzmsh.bdo"], tmp_path / "task_1")
    (estimator,) = merge_job(tmp_path, "shieldhit")
    reference = read_json(RESULTS_FIXTURE)["estimators"][0]  # a 2-D mesh of the platform
    assert estimator.keys() == reference.keys()
    page, expected = estimator["pages"][0], reference["pages"][0]
    assert page.keys() == expected.keys()
    assert page["data"].keys() == expected["data"].keys()
    assert page["metadata"].keys() == expected["metadata"].keys()
    assert (page["metadata"]["page_number"], page["dimensions"]) == ("0", 2)
    assert estimator["metadata"]["file_corename"] == "ex_yzmsh"


def test_results_keep_the_order_of_detect_dat_outputs(tmp_path):
    (tmp_path / "detect.dat").write_text(
        "Geometry Mesh\n    Name m\n# Filename commented.bdo\n"
        "OUTPUT\n  filename  zeta.bdo  ! the first\n  Geo m\n"
        "Output\n\tFilename alpha_2.bdo\n\tGeo m\n"
    )
    names = ["alpha_2_0001.bdo", "other_0001.bdo", "aaa_0001.bdo", "zeta_0001.bdo"]
    ordered = in_output_order([tmp_path / name for name in names], tmp_path)
    assert [path.name for path in ordered] == [
        "zeta_0001.bdo",
        "alpha_2_0001.bdo",
        "aaa_0001.bdo",  # files no Output names: after, by name
        "other_0001.bdo",
    ]
    (tmp_path / "detect.dat").unlink()
    assert [p.name for p in in_output_order([tmp_path / n for n in names], tmp_path)] == sorted(
        names
    )
