"""One worker process of the local runner: its directory, command, environment and output.

Each task runs in `<work_dir>/<job_id>/task_<n>` (work_dir defaults to `<data_dir>/jobs`), with
the simulation's input files (editor input as `input.json`); `<work_dir>/<job_id>` is the job
directory shared by all tasks (for the merge step), which also keeps each task's stdout and
stderr as `task_<n>.log`, and the merge step's as `merge.log`. The worker learns everything
else from YAPTIDE_* environment variables (see job_environment). The update key travels only in the environment: never on the
command line (visible to every user in `ps`), never in a log line.
"""

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import uuid
from pathlib import Path

import orjson

from server import proxies
from server.config import PROJECT_DIR, Config
from server.runner import Job
from server.worker.task import RESULTS_MANIFEST

OUTPUT_TAIL = 64 * 1024
# -P: the task directory (the current one) is not put on sys.path, so a user's input file
# named like a module (orjson.py) is never imported as the worker's code.
DEFAULT_COMMAND = (sys.executable, "-P", "-m", "server.worker")
# Server secrets a worker has no business seeing (it talks to the server only over HTTP;
# PGPASSWORD: libpq's, which asyncpg reads too).
PRIVATE_ENV = ("DATABASE_URL", "YAPTIDE_DATABASE_URL", "YAPTIDE_AUTH_SECRET", "PGPASSWORD")


def work_dir(config: Config) -> Path:
    configured = config.runner.work_dir
    return Path(configured).resolve() if configured else config.data_dir / "jobs"


def job_dir(config: Config, job_id: str) -> Path:
    return work_dir(config) / job_id


def task_dir(job_directory: Path, task_id: int) -> Path:
    return job_directory / f"task_{task_id}"


def output_file(job_directory: Path, task_id: int) -> Path:
    """Where a task's stdout and stderr go: beside its working directory, not inside it."""
    return job_directory / f"task_{task_id}.log"


def has_job_dir(config: Config, job_id: str) -> bool:
    """Whether this host's local runner started a task or merge of the job (its job directory
    is made then, and removed only after the job ended)."""
    return job_dir(config, job_id).is_dir()


def make_job_dir(path: Path) -> None:
    """The job directory `path` (if missing), for this server's account only: it holds one
    user's inputs, results and logs, which no other account of the host may read."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_files(directory: Path, job: Job) -> None:
    directory.mkdir(parents=True)
    if job.input_type == "editor":
        (directory / "input.json").write_bytes(orjson.dumps(job.input))
        return
    for name, text in job.input.items():  # names were checked to be plain base names
        (directory / name).write_text(text, encoding="utf-8")


def inputs_written(job_directory: Path) -> bool:
    """Whether the job's one copy of its input files (shared_inputs) is in place."""
    return (job_directory / "input").is_dir()


def shared_inputs(job_directory: Path, job: Job) -> Path:
    """The job's one copy of its input files, `<job_dir>/input`, written on first use.

    Written beside it and renamed into place, so tasks starting at once never see half of it;
    a copy that could not be written whole (a full work_dir) is removed, not left taking space.
    """
    shared = job_directory / "input"
    if not inputs_written(job_directory):
        make_job_dir(job_directory)
        partial = job_directory / f"input.{os.getpid()}.{uuid.uuid4().hex}"
        try:
            _write_files(partial, job)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        try:
            partial.rename(shared)
        except OSError:  # another task put it in place first
            shutil.rmtree(partial, ignore_errors=True)
    return shared


def write_inputs(directory: Path, job: Job) -> None:
    """Create the task's directory with the simulation's input files (blocking: use a thread).

    The files are hard links to the job's one copy (shared_inputs), so a simulation of many
    tasks takes the disk space of its input once. A program that changes an input file must
    replace it (write a new file, rename it over), as the built-in worker does, not write into it.
    """
    shared = shared_inputs(directory.parent, job)
    directory.mkdir(parents=True, exist_ok=True)
    for source in shared.iterdir():
        target = directory / source.name
        if not target.exists():
            os.link(source, target)


def worker_command(config: Config) -> list[str]:
    return shlex.split(config.runner.command) or list(DEFAULT_COMMAND)


def job_environment(config: Config, job: Job, base_url: str) -> dict[str, str]:
    """What every process of a job is told (tasks and the merge step): the server, the job,
    and the worker settings of the configuration, under their own override names. The server's
    host is in their NO_PROXY: a proxy named for the server's own calls (Keycloak) is not
    between this host's workers and the server."""
    env = {name: value for name, value in os.environ.items() if name not in PRIVATE_ENV}
    env = proxies.bypassing(env, base_url)
    if not config.runner.command:
        # The built-in worker is part of this package, which may not be installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), env.get("PYTHONPATH")]))
    env.update(
        YAPTIDE_URL=base_url,
        YAPTIDE_SIMULATION_ID=job.job_id,
        YAPTIDE_NTASKS=str(job.ntasks),
        YAPTIDE_UPDATE_KEY=job.update_key,
        YAPTIDE_SIM_TYPE=job.sim_type,
        YAPTIDE_INPUT_TYPE=job.input_type,
        YAPTIDE_JOB_DIR=str(job_dir(config, job.job_id)),
        YAPTIDE_SIMULATORS_SHIELDHIT=config.simulators.shieldhit,
        YAPTIDE_SIMULATORS_FLUKA=config.simulators.fluka,
        YAPTIDE_RUNNER_CONVERTER=config.runner.converter,
        YAPTIDE_RUNNER_PROGRESS_INTERVAL=str(config.runner.progress_interval),
        YAPTIDE_RUNNER_RETRY_TIMEOUT=str(config.runner.retry_timeout),
        YAPTIDE_PARENT_PID=str(os.getpid()),  # the built-in worker ends with this server
    )
    return env


def task_environment(config: Config, job: Job, task_id: int, base_url: str) -> dict[str, str]:
    env = job_environment(config, job, base_url)
    env.update(YAPTIDE_TASK_ID=str(task_id), YAPTIDE_PRIMARIES=str(job.primaries[task_id - 1]))
    return env


def merge_output_file(job_directory: Path) -> Path:
    return job_directory / "merge.log"


async def start(
    argv: list[str], cwd: Path, env: dict[str, str], output: Path
) -> asyncio.subprocess.Process:
    """Start a worker in its own session (so that signals reach its children too), its stdout
    and stderr going to `output`: a file, not a pipe, so that a child the worker leaves behind
    holding the output open can never stall the runner."""
    with output.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


def reason(exc: OSError) -> str:
    """Why a command could not start, without the path (the message names it already; asyncio's
    loop repeats it, uvloop's does not)."""
    return exc.strerror or str(exc)


def start_failure(argv: list[str], exc: OSError) -> str:
    """Why a task could not start, for its log: its files could not be written (under
    runner.work_dir: a path that is not a directory, a full disk), or its worker not run."""
    if exc.filename is not None and exc.filename != argv[0]:
        where = exc.filename2 or exc.filename  # os.link: the new file
        return f"The task's files could not be written in runner.work_dir: {where}: {reason(exc)}"
    return f"The worker command {argv[0]!r} could not start: {reason(exc)}"


def drop_results_list(directory: Path) -> None:
    """Remove a failed task's list of result files: they are not merged."""
    with contextlib.suppress(OSError):  # no task directory (never made): no list either
        (directory / RESULTS_MANIFEST).unlink(missing_ok=True)


def signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send `sig` to the worker's process group (the worker and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, sig)


def output_tail(output: Path) -> str:
    """The last OUTPUT_TAIL bytes of a worker's output file."""
    try:
        with output.open("rb") as source:
            source.seek(max(0, source.seek(0, os.SEEK_END) - OUTPUT_TAIL))
            data = source.read()
    except OSError:
        return ""
    # PostgreSQL text cannot hold NUL; a cut multi-byte character becomes U+FFFD.
    return data.decode(errors="replace").replace("\0", "\ufffd")
