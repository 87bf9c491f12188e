"""One worker process of the local runner: its directory, command, environment and output.

Each task runs in `<work_dir>/<job_id>/task_<n>` (work_dir defaults to `<data_dir>/jobs`), with
the simulation's input files (editor input as `input.json`); `<work_dir>/<job_id>` is the job
directory shared by all tasks (for the merge step), which also keeps each task's stdout and
stderr as `task_<n>.log`, and the merge step's as `merge.log` (server/runner/local/jobfiles.py:
what the server writes and reads there). The worker learns everything else from YAPTIDE_*
environment variables (see job_environment). The update key travels only in the environment:
never on the command line (visible to every user in `ps`), never in a log line.
"""

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import NamedTuple

from server import proxies
from server.config import PROJECT_DIR, Config
from server.runner import Job
from server.runner.local import jobfiles
from server.worker.outcomes import describe_exit

log = logging.getLogger(__name__)

OUTPUT_TAIL = 64 * 1024
# -P: the task directory (the current one) is not put on sys.path, so a user's input file
# named like a module (orjson.py) is never imported as the worker's code.
DEFAULT_COMMAND = (sys.executable, "-P", "-m", "server.worker")
# Server secrets a worker has no business seeing (it talks to the server only over HTTP):
# libpq's password and where its password and service files are (asyncpg reads them too), and
# the SSH agent that may sign in to the clusters.
PRIVATE_ENV = (
    "DATABASE_URL",
    "YAPTIDE_DATABASE_URL",
    "YAPTIDE_AUTH_SECRET",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICEFILE",
    "SSH_AUTH_SOCK",
)


class Launch(NamedTuple):
    """A process to start: its command line, where it starts (bwrap: from /, as it goes to the
    task's directory itself), and the descriptors it inherits (the sandbox's filter of system
    calls: server/runner/local/sandbox/syscalls.py)."""

    line: list[str]
    cwd: Path
    fds: tuple[int, ...] = ()


def work_dir(config: Config) -> Path:
    configured = config.runner.work_dir
    return Path(configured).resolve() if configured else config.data_dir / "jobs"


def job_dir(config: Config, job_id: str) -> Path:
    return work_dir(config) / job_id


def has_job_dir(config: Config, job_id: str) -> bool:
    """Whether this host's local runner started a task or merge of the job (its job directory
    is made then, and removed only after the job ended)."""
    return job_dir(config, job_id).is_dir()


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


async def start(launch: Launch, env: dict[str, str], output: Path) -> asyncio.subprocess.Process:
    """Start a worker in its own session (so that signals reach its children too), its stdout
    and stderr going to `output`: a file, not a pipe, so that a child the worker leaves behind
    holding the output open can never stall the runner."""
    with open(jobfiles.open_output(output), "wb") as sink:
        return await asyncio.create_subprocess_exec(
            *launch.line,
            pass_fds=launch.fds,
            cwd=launch.cwd,
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


def signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send `sig` to the worker's process group (the worker and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, sig)


def terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the worker's process group (the worker and whatever it started) but bwrap's
    own processes in it: bwrap ends at SIGTERM and passes none on, and everything in its sandbox
    would end with it at once, with no grace (kill_after's SIGKILL reaches them all)."""
    try:
        members = _group(process.pid)
    except FileNotFoundError:  # no /proc: not Linux, and no bwrap
        signal_group(process, signal.SIGTERM)
        return
    for pid in members:
        if _name(pid) != "bwrap":
            with contextlib.suppress(ProcessLookupError, PermissionError):  # ended meanwhile
                os.kill(pid, signal.SIGTERM)


def _group(pgid: int) -> list[int]:
    """The processes of the process group `pgid`, as /proc lists them."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):  # it ended
                stat = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                if int(stat[2]) == pgid:
                    found.append(int(entry.name))
    return found


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):  # it ended
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


async def kill_after(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGKILL to the process group of `process` unless it ends within `grace` seconds."""
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        signal_group(process, signal.SIGKILL)


async def outcome(process: asyncio.subprocess.Process, output: Path, what: str) -> tuple[str, str]:
    """Once `process` (`what`, for the log) ended, with whatever it left behind killed: how it
    ended, and the tail of its output."""
    returncode = await process.wait()
    signal_group(process, signal.SIGKILL)  # whatever it left behind
    ended = describe_exit(returncode)
    log.info("%s %s", what, ended)
    return ended, await asyncio.to_thread(output_tail, output)


def output_tail(output: Path) -> str:
    """The last OUTPUT_TAIL bytes of a worker's output file (jobfiles.read_tail), as text."""
    data = jobfiles.read_tail(output, OUTPUT_TAIL)
    # PostgreSQL text cannot hold NUL; a cut multi-byte character becomes U+FFFD.
    return data.decode(errors="replace").replace("\0", "\ufffd")
