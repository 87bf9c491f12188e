"""The worker's parts on their own: settings, progress parsing, command lines and FLUKA cards,
the retrying client against a real server, merging, and the page shape."""

import asyncio
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from server.config import PROJECT_DIR
from server.results.upload import dimensions_of
from server.worker import progress as prog
from server.worker.client import JobEnded, Rejected, ServerClient, Unreachable
from server.worker.estimators import MergeError, merge_files
from server.worker.jobdir import RESULTS_MANIFEST
from server.worker.main import run
from server.worker.merge import merge_job
from server.worker.outputs import in_output_order
from server.worker.settings import SettingsError, child_environment, load
from server.worker.simulators import (
    TaskFailed,
    fluka_command,
    fluka_input,
    shieldhit_command,
)
from server.worker.task import TaskRun, keep_results
from tests.fakes.simulators import AVERAGING, REPLAYS, write_fake
from tests.helpers import RESULTS_FIXTURE, eventually, logfiles_of, read_json, set_task

MINIMAL = [REPLAYS / "minimal" / "mesh.bdo", REPLAYS / "minimal" / "fluence.bdo"]
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
    # Not a count: int() refuses 5,000 digits (the task failed with a ValueError); other
    # scripts' digits. Such lines are not progress.
    for count in ("1" * 5000, "\u0664\u0660"):
        line = f"  Primary particle no.   {count}  ETR:   0 hours  0 minutes  1 seconds"
        prog.read_shieldhit_line(progress, line)
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
    # Negative numbers (an input's comment echoed into the .out) are no progress below 0: the
    # server refused the report with a 400, and the worker then stopped its simulator.
    parser.feed(" 1NUMBER OF BEAM    BEAM PARTICLES")
    parser.feed("  -5  10  0  -1.0  0  0")
    assert (progress.simulated, progress.estimated_time) == (0, 0)


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


def test_a_fluka_task_needs_one_input_with_a_start_card(tmp_path):
    path = tmp_path / "sim.inp"
    path.write_text("TITLE\nSTOP\n")
    with pytest.raises(
        TaskFailed, match=re.escape("The FLUKA input sim.inp has no START card (before any STOP).")
    ):
        fluka_command("/bin/true", tmp_path, 5, 1)
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


@pytest.mark.parametrize(
    ("name", "axes", "binning"),
    [
        ("fluence_elin", [10], "lin"),  # an energy axis, linear bins
        ("fluence_elog", [10], "log"),  # the same, logarithmic bins
        ("fluence_2d_lin", [10, 5], "lin"),  # energy x angle
    ],
)
def test_differential_pages_carry_their_axes(tmp_path, name, axes, binning):
    """Differential scoring (tests/fixtures/shieldhit/diff/): one page whose axes are the
    differential ones, with their bins; GET /estimators gives their lengths."""
    keep_results([REPLAYS / "diff" / f"{name}.bdo"], tmp_path / "task_1")
    (estimator,) = merge_job(tmp_path, "shieldhit")
    (page,) = estimator["pages"]
    assert (page["dimensions"], dimensions_of(page)) == (len(axes), axes)
    assert len(page["data"]["values"]) == math.prod(axes)
    first = page["axis_dim1"]["values"]
    steps = [b / a if binning == "log" else b - a for a, b in itertools.pairwise(first)]
    assert steps == pytest.approx([steps[0]] * len(steps))


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


@pytest.fixture
async def refusing_progress(aiohttp_server):
    """A server answering 503 to progress reports (as during a restart), 202 to the rest."""
    seen: list[tuple[str, str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        update = (await request.json()).get("update_dict", {})
        seen.append((request.path, update.get("task_state")))
        progress = request.path == "/tasks" and "task_state" not in update
        return web.json_response({"message": "answer"}, status=503 if progress else 202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")), seen


async def test_progress_the_server_cannot_take_does_not_stop_the_simulator(
    refusing_progress, tmp_path, monkeypatch
):
    """Progress reports are only news: one that ran out of retries (the server down for longer
    than retry_timeout) used to kill a healthy simulator and lose the task."""
    url, seen = refusing_progress
    work = tmp_path / "task_1"
    work.mkdir()
    for name in ("beam.dat", "geo.dat", "mat.dat", "detect.dat"):
        shutil.copy(AVERAGING / name, work)
    fake = write_fake(tmp_path / "shieldhit", "shieldhit", {"*": MINIMAL}, delay=0.1)
    env = {
        **ENV,
        "YAPTIDE_URL": url,
        "YAPTIDE_JOB_DIR": str(tmp_path),
        "YAPTIDE_TASK_ID": "1",
        "YAPTIDE_SIMULATORS_SHIELDHIT": str(fake),
        "YAPTIDE_RUNNER_PROGRESS_INTERVAL": "0.2",
        "YAPTIDE_RUNNER_RETRY_TIMEOUT": "0.5",
    }
    for name in ("YAPTIDE_TASK_ID", "YAPTIDE_JOB_DIR"):  # what the fake simulator reads
        monkeypatch.setenv(name, env[name])
    settings = load(env)
    async with aiohttp.ClientSession() as session:
        await TaskRun(settings, ServerClient(settings, session), work).run()
    assert ("/tasks", None) in seen  # progress was tried, and refused
    assert seen[-1] == ("/tasks", "COMPLETED")
    assert (tmp_path / "task_1" / RESULTS_MANIFEST).exists()


async def test_refused_log_files_do_not_keep_the_task_from_ending(aiohttp_server, tmp_path):
    """Log files count against the owner's quota: a 413 for them must not keep the task from
    reporting its end (a 409 still stops the worker)."""
    answers = [413, 202, 409]
    calls: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        calls.append(request.path)
        status = answers.pop(0)
        return web.json_response({"message": f"answer {status}"}, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    url = str((await aiohttp_server(app)).make_url(""))
    settings = load({**ENV, "YAPTIDE_URL": url, "YAPTIDE_JOB_DIR": str(tmp_path)})
    async with aiohttp.ClientSession() as session:
        run = TaskRun(settings, ServerClient(settings, session), tmp_path)
        await run.fail("The simulator crashed.")
        assert calls == ["/logfiles", "/tasks"]
        with pytest.raises(JobEnded):
            await run.client.save_logfiles({"task_3_stdout": "x"})


async def test_merge_waits_for_a_task_slurm_ended_unreported(worker, conn, tmp_path):
    """Under SLURM the merge job starts once the array has ended (afterany), possibly before
    the reconciler has failed an array task SLURM killed (time limit, out of memory): the job is
    still RUNNING. The merge step took that 409 for the job's end and exited without merging;
    the reconciler then failed the whole job, though three tasks had COMPLETED."""
    client, _, identity = worker
    for task_id in (1, 2, 3, 4):
        await set_task(client, identity, task_id, task_state="RUNNING")
    for task_id in (1, 2, 3):
        keep_results([REPLAYS / "minimal" / "mesh.bdo"], tmp_path / f"task_{task_id}")
        await set_task(client, identity, task_id, task_state="COMPLETED")
    env = {
        **ENV,
        "YAPTIDE_URL": str(client.make_url("")),
        "YAPTIDE_SIMULATION_ID": identity["simulation_id"],
        "YAPTIDE_UPDATE_KEY": identity["update_key"],
        "YAPTIDE_JOB_DIR": str(tmp_path),
        "YAPTIDE_RUNNER_RETRY_TIMEOUT": "30",
    }
    settings = load({k: v for k, v in env.items() if k not in ("YAPTIDE_TASK_ID",)}, merge=True)

    async def reconciler() -> None:  # its next poll: task 4 FAILED, as fail_task does
        await asyncio.sleep(1.5)
        await set_task(client, identity, 4, task_state="FAILED")

    merged, _ = await asyncio.gather(run("merge", settings), reconciler())
    assert merged == 0
    state = await conn.fetchval("SELECT job_state FROM simulations")
    assert state == "COMPLETED"
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 1


def test_progress_estimates_are_ones_the_server_takes():
    """An estimate past 2**31 - 1 s (a slow first primary times many left) is refused by the
    server with 400, and a refused progress report stops the simulator (TaskRun.supervise): the
    reporter must send what the server takes."""
    from server.jobs.reports import parse_update_dict

    progress = prog.Progress()
    line = "  Primary particle no.   1  ETR: 700000 hours  0 minutes  0 seconds"
    prog.read_shieldhit_line(progress, line)
    fluka = prog.Progress()
    parser = prog.FlukaOutParser(fluka)
    row = "          1  999999999          1     5.0000000E+00     1.0000000E+30     44182  "
    for text in (" 1NUMBER OF BEAM    BEAM PARTICLES", row):
        parser.feed(text)
    for reported in (progress, fluka):
        update = {"simulated_primaries": reported.simulated}
        update["estimated_time"] = reported.estimated_time
        parse_update_dict(update)  # 400 (BadRequest) for what the server cannot take


def _run_measured(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, int]:
    """Run a process to its end: its exit status and its peak memory (KiB)."""
    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL) as process:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss


async def test_a_converter_that_prints_a_flood_does_not_grow_the_worker(worker, conn, tmp_path):
    """A converter printing 256 MiB (a warning per element of a large project): the worker held
    all of it, and a decoded copy, to keep the last 64 KiB (386 MiB more than with 64 lines)."""
    client, _, identity = worker
    env = {
        **{k: v for k, v in ENV.items() if k != "YAPTIDE_URL"},
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_DIR),
        "YAPTIDE_URL": str(client.make_url("")),
        "YAPTIDE_SIMULATION_ID": identity["simulation_id"],
        "YAPTIDE_UPDATE_KEY": identity["update_key"],
        "YAPTIDE_JOB_DIR": str(tmp_path),
        "YAPTIDE_INPUT_TYPE": "editor",
        "YAPTIDE_RUNNER_CONVERTER": f"{sys.executable} flood.py",
    }
    peaks = []
    for task_id, lines in ((1, 64), (2, 256 * 1024)):  # a task of the job each
        env["YAPTIDE_TASK_ID"] = str(task_id)
        (tmp_path / "flood.py").write_text(
            f"import sys\nfor _ in range({lines}): sys.stdout.write('w' * 1023 + '\\n')\n"
            "sys.exit(3)\n"
        )
        argv = [sys.executable, "-m", "server.worker"]
        status, peak = await asyncio.to_thread(_run_measured, argv, env, tmp_path)
        assert status == 0
        peaks.append(peak)
        logs = await logfiles_of(conn)
        assert logs[f"task_{task_id}_error"] == "The converter exited with code 3."
        assert logs[f"task_{task_id}_converter"] == ("w" * 1023 + "\n") * 64
    growth = (peaks[1] - peaks[0]) // 1024
    assert growth < 32, f"the worker took {growth} MiB more for the flood"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"YAPTIDE_URL": "yaptide.example.org:8000"},
            "YAPTIDE_URL must be an http:// or https:// URL, got 'yaptide.example.org:8000'",
        ),
        (
            {"YAPTIDE_URL": "http://127.0.0.1:99999"},
            "YAPTIDE_URL must be an http:// or https:// URL, got 'http://127.0.0.1:99999'",
        ),
        (
            {"YAPTIDE_URL": "https://operator:hunter2@yaptide.example.org/"},
            "YAPTIDE_URL must not hold a user name or password (workers send their update key)",
        ),
        (
            {"YAPTIDE_URL": "https://operator:hunter2@yaptide.example.org:99999/"},
            "YAPTIDE_URL must be an http:// or https:// URL without a user name or password",
        ),
        (
            {"YAPTIDE_URL": "https://operator:hunter2@[yaptide.example.org/"},
            "YAPTIDE_URL must be an http:// or https:// URL without a user name or password",
        ),
        (
            {"YAPTIDE_UPDATE_KEY": "k" * 43 + "\r"},
            "YAPTIDE_UPDATE_KEY must be printable ASCII without spaces",
        ),
    ],
)
async def test_a_garbled_variable_is_one_line_and_status_2(answering, changes, message):
    """A URL without its scheme (or with a port past 65535) was retried like an unreachable
    server for retry_timeout (10 minutes by default), then status 1, "the server could not be
    told"; a key read from a file with Windows line ends ended in a 49-line traceback."""
    url, _ = answering
    env = {
        **ENV,
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_DIR),
        "YAPTIDE_URL": url,
        "YAPTIDE_RUNNER_RETRY_TIMEOUT": "3",
        **changes,
    }
    argv = [sys.executable, "-m", "server.worker"]
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert done.stderr.endswith(f" ERROR server.worker: cannot start: {message}\n")
    assert "k" * 43 not in done.stderr
    assert "hunter2" not in done.stderr


def test_fluka_rows_the_server_would_refuse_are_bounded_or_skipped():
    """A time per primary that is not finite (NaN, Infinity) skips its row, and primaries past
    a bigint are reported as the most the server takes: a refused report stops the simulator."""
    progress = prog.Progress()
    parser = prog.FlukaOutParser(progress)
    parser.feed(" 1NUMBER OF BEAM    BEAM PARTICLES")
    for per_primary in ("NaN", "Infinity", "-Infinity"):
        parser.feed(f"     980000      20000      20000     {per_primary}     1.0E+30     44182")
    assert progress.version == 0
    parser.feed(f"     {2**64}      20000      20000     1.0E-04     1.0E+30     44182")
    assert (progress.simulated, progress.estimated_time) == (prog.MAX_PRIMARIES, 2)


async def test_a_fluka_out_line_without_end_does_not_grow_the_worker(tmp_path):
    """The .out file is read a bounded piece at a time, and of a line not ended yet only the end
    is kept: 40 MiB without a newline before the progress table once cost several times that."""
    out = tmp_path / "fluka_1" / "input001.out"
    out.parent.mkdir()
    row = "     980000      20000      20000     1.8515483E-04     1.0000000E+30     44182\n"
    out.write_text("x" * (40 << 20) + "\n 1NUMBER OF BEAM    BEAM PARTICLES\n" + row)
    progress = prog.Progress()
    tracemalloc.start()
    try:
        following = asyncio.ensure_future(prog.follow_fluka_out(tmp_path, progress, 0.01))

        async def reported() -> bool:
            return progress.version > 0

        await eventually(reported, timeout=30)
        following.cancel()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (progress.simulated, progress.estimated_time) == (980000, 4)
    assert peak < 24 << 20, f"{peak >> 20} MiB"
