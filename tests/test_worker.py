"""The built-in worker end to end: the local runner runs `python -m server.worker` per task,
which runs a fake SHIELD-HIT12A (tests/fakes/simulators.py) replaying real captured runs, reports
progress and results over HTTP, and the merge step merges the tasks' real files."""

import asyncio
import os
import shlex
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import streams, web

from server.worker.progress import TAIL_BYTES
from server.worker.task import STREAM_LIMIT
from tests.fakes.simulators import (
    AVERAGING,
    REPLAYS,
    averaging_files,
    averaging_payload,
    write_fake,
)
from tests.helpers import (
    MESH_MEANS,
    Unavailable,
    eventually,
    job_dir_of,
    logfiles_of,
    page_means,
    payload,
    pid_alive,
    results_of,
    seen_by_simulator,
    states_are,
    status,
    submit,
    task_and_job_ends,
    wait_gone,
)

# pymchelper 2.9.6, fromfilelist(files, ErrorEstimate.none, nan=False): mean over the values.
REFERENCE = {
    ("normalisation-5_aggregation-mean", "DOSE"): 1.04919,
    ("normalisation-5_aggregation-mean", "FLUENCE"): 0.0486252,
    ("normalisation-2_aggregation-sum", "COUNT"): 19128,
    ("normalisation-3_aggregation-mean", "DLET"): 135.441,
    ("normalisation-3_aggregation-mean", "TLET"): 38.8986,
    ("normalisation-1_aggregation-none", "MATERIAL"): 1,
    ("normalisation-1_aggregation-none", "RHO"): 1,
}
MINIMAL = [REPLAYS / "minimal" / "mesh.bdo", REPLAYS / "minimal" / "fluence.bdo"]
MINIMAL_PRIMARIES = 20  # of each of its files


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("sandbox", ["off", "on"])
async def test_seven_tasks_merged_by_primaries(start_worker, fake, conn, sandbox, request):
    """Also in the runner's sandbox (server/runner/local/sandbox/): the fake simulator, in a
    directory the sandbox hides (/tmp), is shown to it, and the task directories are its own."""
    if sandbox == "on":
        request.getfixturevalue("bwrap")
    simulators = {"shieldhit": str(fake(averaging_files()))}
    client, recorder, config = await start_worker(simulators, sandbox=sandbox)
    job_id = await submit(client, averaging_payload(ntasks=7))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=90)
    requested = [task["requested_primaries"] for task in body["job_tasks_status"]]
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED"] * 7
    assert [task["simulated_primaries"] for task in body["job_tasks_status"]] == requested
    results = await results_of(client, job_id)
    assert page_means(results) == {key: approx(value) for key, value in REFERENCE.items()}
    page = results["estimators"][0]["pages"][0]
    assert (page["metadata"]["page_number"], page["dimensions"]) == ("0", 0)

    job_dir = job_dir_of(config, job_id)
    for task_id in range(1, 8):
        seen = seen_by_simulator(job_dir, task_id)
        task_dir = str(job_dir / f"task_{task_id}")
        assert seen["argv"][1:] == ["-n", str(requested[task_id - 1]), "-N", str(task_id), task_dir]
        assert (seen["cwd"], seen["key_seen"]) == (task_dir, False)
        assert seen["files"] == ["beam.dat", "detect.dat", "geo.dat", "mat.dat"]
    logs = await logfiles_of(conn)
    assert sorted(logs) == sorted(
        f"task_{n}_{s}" for n in range(1, 8) for s in ("stdout", "stderr")
    )
    assert logs["task_1_stdout"].endswith(
        "Transport completed.\n   Run time:   0 hours  0 minutes  0 seconds\n"
    )
    assert recorder.key(job_id) not in (job_dir / "task_1.log").read_text()
    delay, _ = await task_and_job_ends(conn)
    print(f"\n7-task averaging job: last task end -> COMPLETED {delay:.3f} s")


async def test_progress_while_running(start_worker, fake, conn):
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": MINIMAL}, delay=0.08))})
    job_id = await submit(client, averaging_payload(ntasks=1))
    seen: list[tuple[int, int]] = []

    async def finished():
        task = (await status(client, job_id))["job_tasks_status"][0]
        if task["task_state"] == "RUNNING" and task["simulated_primaries"]:
            seen.append((task["simulated_primaries"], task["estimated_time"]))
        return task["task_state"] == "COMPLETED"

    await eventually(finished, timeout=60)
    primaries = [done for done, _ in seen]
    assert len(set(primaries)) >= 2, seen  # rising while it runs
    assert primaries == sorted(primaries) and 0 < primaries[0] < primaries[-1] < 3040
    assert all(estimated == 0 for _, estimated in seen)  # the replayed ETR


async def test_mesh2d_over_several_tasks(start_worker, fake, conn):
    mesh = REPLAYS / "mesh2d" / "ex_yzmsh.bdo"
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": [mesh]}, seed_suffix=True))})
    job_id = await submit(client, averaging_payload(ntasks=3))
    await eventually(states_are(client, job_id, "COMPLETED"), timeout=60)
    response = await client.get("/estimators", params={"job_id": job_id})
    assert await response.json() == {
        "message": "Estimators",
        "estimators": [
            {
                "name": "ex_yzmsh",
                "pages": [
                    {"page_number": n, "name": name, "dimensions": [100, 300]}
                    for n, name in enumerate(["DOSE", "TLET", "ZONE"])
                ],
            }
        ],
    }
    results = await results_of(client, job_id)
    estimator = results["estimators"][0]
    # Three copies of one run: the weighted mean is that run.
    assert page_means(results) == {key: approx(value) for key, value in MESH_MEANS.items()}
    assert len(estimator["pages"][0]["data"]["values"]) == 30000


async def test_simulator_exits_non_zero(start_worker, fake, conn):
    shieldhit = fake({"*": MINIMAL}, exit_code=3, stderr="Segmentation fault (core dumped)")
    client, _, _ = await start_worker({"shieldhit": str(shieldhit)})
    job_id = await submit(client, averaging_payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=60)
    logs = await logfiles_of(conn)
    assert sorted(logs) == sorted(
        f"task_{n}_{s}" for n in (1, 2) for s in ("stdout", "stderr", "error")
    )
    for n in (1, 2):
        assert logs[f"task_{n}_error"] == "SHIELD-HIT12A exited with code 3."
        assert logs[f"task_{n}_stderr"] == "Segmentation fault (core dumped)\n"
        assert "Transport completed." in logs[f"task_{n}_stdout"]
    response = await client.get("/results", params={"job_id": job_id})
    assert (response.status, await response.json()) == (404, {"message": "Results not available"})


def python_simulator(tmp_path: Path, code: str) -> Path:
    """A SHIELD-HIT12A stand-in: a Python script running `code` (with shutil, subprocess and
    sys imported), then leaving the minimal result file."""
    fake = tmp_path / "shieldhit"
    fake.write_text(
        f"#!{sys.executable}\nimport shutil, subprocess, sys\n{code}"
        f"shutil.copyfile({str(MINIMAL[0])!r}, 'mesh.bdo')\n"
    )
    fake.chmod(0o755)
    return fake


async def test_a_process_the_simulator_left_holding_its_output_does_not_hold_the_task(
    start_worker, tmp_path, conn
):
    """A simulator that ends while something it started still holds its output (a wrapper's
    helper, an orphaned child): the task stayed RUNNING until that process ended (asyncio's
    wait() waits for the pipes to close too), here 120 s; it may never end."""
    fake = python_simulator(
        tmp_path,
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('Transport completed.')\n",
    )
    client, _, _ = await start_worker({"shieldhit": str(fake)})
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=30)
    assert (await logfiles_of(conn))["task_1_stdout"] == "Transport completed.\n"


async def test_a_process_the_converter_left_holding_its_output_does_not_hold_the_task(
    start_worker, fake, tmp_path, conn
):
    """The same for the converter (a `cmd &` in a wrapper script): the task stayed RUNNING."""
    converter = tmp_path / "convert.sh"
    converter.write_text(
        "#!/bin/sh\nsleep 120 &\necho converted\n"
        f"cp {AVERAGING}/beam.dat {AVERAGING}/geo.dat {AVERAGING}/mat.dat {AVERAGING}/detect.dat .\n"
    )
    converter.chmod(0o755)
    client, _, _ = await start_worker(
        {"shieldhit": str(fake({"*": MINIMAL}))}, converter=str(converter)
    )
    job_id = await submit(client, payload("json_payload_editor.json", ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=30)
    assert (await logfiles_of(conn))["task_1_converter"] == "converted\n"


async def test_task_that_writes_nothing(start_worker, fake, conn):
    client, _, config = await start_worker({"shieldhit": str(fake({"1": MINIMAL}))})
    job_id = await submit(client, averaging_payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=60)
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED", "FAILED"]
    logs = await logfiles_of(conn)
    assert logs["task_2_error"] == (
        "SHIELD-HIT12A finished but wrote no result files (*.bdo): check its output and the "
        "detectors of the input."
    )
    results = await results_of(client, job_id)
    assert [e["name"] for e in results["estimators"]] == ["fluence", "mesh"]
    assert not (job_dir_of(config, job_id) / "task_2" / ".yaptide_results.json").exists()


async def test_merge_fails_on_a_damaged_file(start_worker, fake, conn, tmp_path):
    damaged = tmp_path / "damaged.bdo"
    damaged.write_bytes(b"xSH12A" + bytes(range(256)) * 4)
    client, _, _ = await start_worker({"shieldhit": str(fake({"1": MINIMAL, "2": [damaged]}))})
    job_id = await submit(client, averaging_payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "COMPLETED"), timeout=60)
    assert (await logfiles_of(conn))["merge"] == (
        "The results could not be merged: task_2/damaged.bdo is not a readable SHIELD-HIT12A "
        "result file"
    )
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


TWO_PAGES = AVERAGING / "normalisation-5_aggregation-mean_0001.bdo"  # DOSE and FLUENCE


async def test_a_page_of_another_shape_fails_the_merge(start_worker, fake, conn, tmp_path):
    """A differential file (10 x 5 bins) cut in its axes reads as a page of one value, which
    numpy spread over the other task's 50 bins: the job was COMPLETED with 50 NaNs (nulls)."""
    source = REPLAYS / "diff" / "fluence_2d_lin.bdo"
    cut = tmp_path / "fluence_2d_lin.bdo"
    cut.write_bytes(source.read_bytes()[:2040])
    client, _, _ = await start_worker({"shieldhit": str(fake({"1": [source], "2": [cut]}))})
    job_id = await submit(client, averaging_payload(ntasks=2))
    await eventually(states_are(client, job_id, "FAILED", "COMPLETED"), timeout=60)
    assert (await logfiles_of(conn))["merge"] == (
        "The results could not be merged: task_2/fluence_2d_lin.bdo does not match: (1,) "
        "values where the first task has (50,)"
    )
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


@pytest.mark.parametrize(
    ("source", "length", "problem"),
    [
        (MINIMAL[0], 1872, "page 0 holds 4 values for 16 bins"),
        (MINIMAL[0], 1008, "it holds no page"),
        (TWO_PAGES, 1888, "it holds 1 of its 2 pages"),
    ],
)
async def test_a_result_file_cut_short_fails_the_merge(
    start_worker, fake, conn, tmp_path, source, length, problem
):
    """A result file cut short (the node's disk filled up while the simulator wrote it) that
    pymchelper still reads: the job was COMPLETED with a 4 x 4 page of 4 values, with an
    estimator of no page, or with the first of two pages, and nobody was told."""
    cut = tmp_path / "mesh.bdo"
    cut.write_bytes(source.read_bytes()[:length])
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": [cut]}))})
    job_id = await submit(client, averaging_payload(ntasks=1))

    async def ended() -> str | None:
        state = (await status(client, job_id))["job_state"]
        return state if state in ("COMPLETED", "FAILED") else None

    assert await eventually(ended, timeout=60) == "FAILED"
    assert (await logfiles_of(conn))["merge"] == (
        f"The results could not be merged: task_1/mesh.bdo is cut short or damaged: {problem}"
    )
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_server_unavailable_for_a_while(start_worker, fake, conn):
    unavailable = Unavailable(6)
    shieldhit = fake({"*": MINIMAL}, seed_suffix=True)
    client, _, _ = await start_worker({"shieldhit": str(shieldhit)}, middleware=unavailable)
    job_id = await submit(client, averaging_payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=90)
    assert [task["task_state"] for task in body["job_tasks_status"]] == ["COMPLETED"] * 2
    assert unavailable.refused == 6
    results = await results_of(client, job_id)
    assert [e["name"] for e in results["estimators"]] == ["fluence", "mesh"]


class LosesACompletedAnswer:
    """Stores task 2's COMPLETED, then answers 503 to it and to every retry of it: an
    acknowledged update whose answer was lost, the server in trouble for a while after."""

    def __init__(self) -> None:
        self.stored = self.refused = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.method != "POST" or request.path != "/tasks":
            return await handler(request)
        raw = await request.read()
        request = replayed(request, raw)
        body = orjson.loads(raw)
        if body.get("task_id") != 2 or body["update_dict"].get("task_state") != "COMPLETED":
            return await handler(request)
        if not self.stored:
            self.stored += 1
            await handler(request)
        self.refused += 1
        return web.json_response({"message": "Service Unavailable"}, status=503)


def replayed(request: web.Request, raw: bytes) -> web.Request:
    """`request` with its body (read by a middleware) there to be read again by the handler."""
    reader = streams.StreamReader(request.protocol, 2**16, loop=asyncio.get_running_loop())
    reader.feed_data(raw)
    reader.feed_eof()
    request._payload = reader
    return request


async def test_a_task_the_server_took_as_completed_is_merged(start_worker, fake, conn):
    """Task 2's COMPLETED is stored but its answer never reaches the worker (retry_timeout
    runs out): the worker removed its result list, "not COMPLETED as far as the server knows",
    and the job was COMPLETED with both tasks COMPLETED but task 1's results alone."""
    lossy = LosesACompletedAnswer()
    shieldhit = fake({"*": MINIMAL}, seed_suffix=True)
    client, _, _ = await start_worker(
        {"shieldhit": str(shieldhit)}, middleware=lossy, retry_timeout=1.0, slots=1
    )
    job_id = await submit(client, averaging_payload(ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=60)
    assert (lossy.stored, lossy.refused >= 2) == (1, True)
    assert [t["task_state"] for t in body["job_tasks_status"]] == ["COMPLETED", "COMPLETED"]
    mesh = next(e for e in (await results_of(client, job_id))["estimators"] if e["name"] == "mesh")
    assert mesh["metadata"]["number_of_primaries"] == str(2 * MINIMAL_PRIMARIES)


async def test_cancel_kills_the_simulator(start_worker, fake, conn):
    client, _, config = await start_worker({"shieldhit": str(fake({"*": MINIMAL}, hang=True))})
    job_id = await submit(client, averaging_payload(ntasks=1))
    job_dir = job_dir_of(config, job_id)

    async def running():
        return (job_dir / "simrunning_1").exists()

    await eventually(running, timeout=60)
    pid = int((job_dir / "simpid_1").read_text())
    assert pid_alive(pid)
    response = await client.delete("/jobs/direct", params={"job_id": job_id})
    assert response.status == 200
    await wait_gone([pid])
    assert (await status(client, job_id))["job_state"] == "CANCELED"
    assert await logfiles_of(conn) == {}


async def test_fluka(start_worker, tmp_path, conn):
    forts = sorted((REPLAYS / "fluka_minimal").glob("*_fort.*"))
    rfluka = write_fake(tmp_path / "rfluka", "fluka", {"*": forts}, delay=0.02)
    client, _, config = await start_worker({"fluka": str(rfluka)})
    job_id = await submit(client, payload("fluka_json_payload_files.json", ntasks=2))
    body = await eventually(states_are(client, job_id, "COMPLETED"), timeout=60)
    assert [(t["task_state"], t["simulated_primaries"]) for t in body["job_tasks_status"]] == [
        ("COMPLETED", 5000),
        ("COMPLETED", 5000),
    ]
    job_dir = job_dir_of(config, job_id)
    for task_id in (1, 2):
        seen = seen_by_simulator(job_dir, task_id)
        inp = str(job_dir / f"task_{task_id}" / "fl_sim.inp")
        assert seen["argv"][1:] == ["-N0", "-M1", inp]
        assert "\nSTART           5000\n" in seen["input"]
        assert f"\nRANDOMIZ         1.0{task_id:>10}\n" in seen["input"]
    results = await results_of(client, job_id)
    assert [e["name"] for e in results["estimators"]] == ["21", "22"]
    assert page_means(results) == {
        ("21", "ENERGY"): approx(0.2545319657656364),
        ("22", "ENERGY"): approx(0.3810979633271927),
    }
    logs = await logfiles_of(conn)
    assert "End of FLUKA run" in logs["task_1_stdout"]


async def test_unsupported_simulator(start_worker, fake, conn):
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": MINIMAL}))})
    job_id = await submit(client, {**averaging_payload(ntasks=1), "sim_type": "topas"})
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=60)
    assert await logfiles_of(conn) == {
        "task_1_error": "Simulations of type 'topas' are not supported by this worker: it runs "
        "fluka and shieldhit simulations only."
    }


async def test_simulator_not_installed(start_worker, conn):
    client, _, _ = await start_worker({"shieldhit": "/nonexistent/shieldhit"})
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=60)
    assert await logfiles_of(conn) == {
        "task_1_error": "The SHIELD-HIT12A executable '/nonexistent/shieldhit' was not found on "
        "this machine. Install SHIELD-HIT12A, or set [simulators] shieldhit in config.toml "
        "(YAPTIDE_SIMULATORS_SHIELDHIT) to its path."
    }


async def test_editor_input_with_converter(start_worker, fake, conn, tmp_path):
    converter = tmp_path / "convert.sh"
    converter.write_text(
        f'#!/bin/sh\ntest -f input.json || exit 5\necho "converting $1"\n'
        f"cp {AVERAGING}/beam.dat {AVERAGING}/geo.dat {AVERAGING}/mat.dat {AVERAGING}/detect.dat .\n"
    )
    converter.chmod(0o755)
    client, _, _ = await start_worker(
        {"shieldhit": str(fake({"*": MINIMAL}))}, converter=f"{converter} input.json"
    )
    job_id = await submit(client, payload("json_payload_editor.json", ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)
    logs = await logfiles_of(conn)
    assert logs["task_1_converter"] == "converting input.json\n"
    assert [e["name"] for e in (await results_of(client, job_id))["estimators"]] == [
        "fluence",
        "mesh",
    ]


async def test_worker_gives_up_when_the_server_stays_unavailable(start_worker, fake, conn):
    unavailable = Unavailable(1000)
    client, recorder, _ = await start_worker(
        {"shieldhit": str(fake({"*": MINIMAL}))}, middleware=unavailable, retry_timeout=1.0
    )
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=60)
    log = (await logfiles_of(conn))["task_1_output"]
    assert log.startswith(
        "The worker exited with code 1 without reporting a final task state.\n\nLast output:\n"
    )
    assert log.endswith("giving up: POST /tasks failed for 1 s, last: HTTP 503\n")
    assert unavailable.refused >= 3  # retried, with backoff, for about a second
    assert recorder.key(job_id) not in log


async def test_a_refused_progress_report_ends_the_worker_in_one_line(start_worker, fake, conn):
    """A progress report refused (403: the key was replaced, `run.py job-key`) stops the
    simulator and the worker: asyncio also logged "_GatheringFuture exception was never
    retrieved" with a traceback, in the task's log file."""
    shieldhit = fake({"*": MINIMAL}, delay=0.3)  # progress for some seconds
    client, _, config = await start_worker({"shieldhit": str(shieldhit)})
    job_id = await submit(client, averaging_payload(ntasks=1))
    started = job_dir_of(config, job_id) / "simpid_1"

    async def running() -> bool:
        return started.exists()

    await eventually(running, timeout=60)
    await conn.execute("UPDATE simulations SET update_key_sha256 = '\\x00'")
    await eventually(states_are(client, job_id, "FAILED", "FAILED"), timeout=60)
    log = (await logfiles_of(conn))["task_1_output"]
    assert log.endswith("giving up: POST /tasks was refused with 403: Invalid update key\n"), log
    assert "Traceback" not in log and "never retrieved" not in log, log


async def test_output_lines_over_the_stream_limit_do_not_fail_the_task(
    start_worker, tmp_path, conn
):
    """A simulator that prints more than the worker's line limit without a newline (a progress
    bar redrawn with carriage returns, binary garbage) still completes its task: it was killed,
    and its task FAILED with "ValueError: Separator is not found, and chunk exceed the limit"."""
    fake = python_simulator(
        tmp_path,
        f"sys.stdout.write('\\r12%' * {STREAM_LIMIT})\nprint()\nprint('Transport completed.')\n",
    )
    client, _, _ = await start_worker({"shieldhit": str(fake)})
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED"), timeout=60)
    log = (await logfiles_of(conn))["task_1_stdout"]
    assert log.endswith("Transport completed.\n") and len(log) <= TAIL_BYTES


# The fake simulator below: its parent's (the worker's) environment read as any process of the
# account can, or refused.
READ_PARENT = """
import os
try:
    with open(f'/proc/{os.getppid()}/environ', 'rb') as parent:
        print('read', b'YAPTIDE_UPDATE_KEY=' in parent.read())
except PermissionError:
    print('refused')
"""


async def test_the_simulator_cannot_read_the_update_key_from_the_worker(
    start_worker, tmp_path, conn
):
    """The simulator runs as the worker's account: it read the worker's environment, update
    key included, from /proc and could write it to its output (a log file its owner gets).
    As root the worker runs without capabilities here (setpriv), as an account's processes do
    and the sandbox's do: one with CAP_SYS_PTRACE may read any process."""
    fake = python_simulator(tmp_path, READ_PARENT)
    command = [sys.executable, "-P", "-m", "server.worker"]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]
    client, _, _ = await start_worker(
        {"shieldhit": str(fake)}, command=shlex.join(command), sandbox="off"
    )
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=30)
    assert (await logfiles_of(conn))["task_1_stdout"] == "refused\n"
