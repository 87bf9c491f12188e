"""The SLURM side of a simulation: its batch scripts and the sbatch/squeue/scancel lines.

A simulation becomes one job array (`--array=1-N`, task n runs the worker for simulation task
n) and one merge job (`--dependency=afterany:<array>`, runs `worker merge`). Both run in the
job directory on the cluster: `input/` holds the simulation's input files, each array task
hard-links them into `task_<n>/` (copies where links fail) and runs there (the merge step reads
`task_*/`); SLURM writes the outputs to `task_<n>.log` and `merge.log` (the layout:
server/worker/jobdir.py).

The update key is the one secret: it is never written into a script nor onto a command line
(both are kept by SLURM and visible to others). The submit line reads it from standard input
into the environment of `sbatch`, which `--export=ALL` hands to the jobs; every other setting is
exported by the scripts.
"""

import os
import re
import shlex
import sys
from collections.abc import Sequence

import orjson

from server import proxies
from server.config import PROJECT_DIR, ClusterConfig, Config
from server.runner import Job
from server.worker.jobdir import INPUT, MERGE_OUTPUT, task_dir, task_output

KEY_VARIABLE = "YAPTIDE_UPDATE_KEY"
ARRAY_SCRIPT = "array.sh"
TASK = task_dir("$task")  # the array task's directory, in its script
MERGE_SCRIPT = "merge.sh"


def python_command(cluster: ClusterConfig) -> str:
    """How the cluster runs Python (a command line of the operator's); this server's own
    interpreter for the login-node cluster."""
    return cluster.python or shlex.quote(sys.executable)


def _defaults(cluster: ClusterConfig) -> list[str]:
    """The cluster's own #SBATCH lines: partition, account, time limit, extra lines."""
    pairs = [
        ("partition", cluster.partition),
        ("account", cluster.account),
        ("time", cluster.time_limit),
    ]
    lines = [f"#SBATCH --{name}={value}" for name, value in pairs if value]
    return lines + [line for line in cluster.sbatch_lines.splitlines() if line.strip()]


def _exports(config: Config, cluster: ClusterConfig, job: Job, job_dir: str) -> list[str]:
    """Everything a worker is told but its key (README "Running the worker elsewhere")."""
    values = {
        "YAPTIDE_URL": config.base_url,
        "YAPTIDE_SIMULATION_ID": job.job_id,
        "YAPTIDE_NTASKS": str(job.ntasks),
        "YAPTIDE_SIM_TYPE": job.sim_type,
        "YAPTIDE_INPUT_TYPE": job.input_type,
        "YAPTIDE_JOB_DIR": job_dir,
        "YAPTIDE_SIMULATORS_SHIELDHIT": config.simulators.shieldhit,
        "YAPTIDE_SIMULATORS_FLUKA": config.simulators.fluka,
        "YAPTIDE_RUNNER_CONVERTER": config.runner.converter,
        "YAPTIDE_RUNNER_PROGRESS_INTERVAL": str(config.runner.progress_interval),
        "YAPTIDE_RUNNER_RETRY_TIMEOUT": str(config.runner.retry_timeout),
    }
    if not cluster.python:  # this server's interpreter: the package may not be installed
        values["PYTHONPATH"] = str(PROJECT_DIR)
    if not cluster.host:  # sbatch passes on this server's environment, and the proxy it names
        bypass = proxies.bypassing(os.environ, config.base_url)
        values.update({name: bypass[name] for name in proxies.NO_PROXY_NAMES if name in bypass})
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def array_script(
    config: Config, cluster: ClusterConfig, job: Job, job_dir: str, lines: tuple[str, ...]
) -> str:
    primaries = " ".join(str(count) for count in (0, *job.primaries))
    body = [
        "#!/bin/bash",
        *_defaults(cluster),
        *lines,
        f"# YAPTIDE simulation {job.job_id}: array task n runs simulation task n",
        "set -eu",
        *_exports(config, cluster, job, job_dir),
        f"primaries=({primaries})",
        "task=$SLURM_ARRAY_TASK_ID",
        'export YAPTIDE_TASK_ID="$task" YAPTIDE_PRIMARIES="${primaries[$task]}"',
        f'mkdir -p "{TASK}"',
        # Hard links, as the local runner's (a filesystem without them: copies); -f for a rerun.
        f'cp -Rlf {INPUT}/. "{TASK}/" 2>/dev/null || cp -Rf {INPUT}/. "{TASK}/"',
        f'cd "{TASK}"',
        f"exec {python_command(cluster)} -P -m server.worker",
    ]
    return "\n".join(body) + "\n"


def merge_script(
    config: Config, cluster: ClusterConfig, job: Job, job_dir: str, lines: tuple[str, ...]
) -> str:
    body = [
        "#!/bin/bash",
        *_defaults(cluster),
        *lines,
        f"# YAPTIDE simulation {job.job_id}: merges the results of the array tasks",
        "set -eu",
        *_exports(config, cluster, job, job_dir),
        f"exec {python_command(cluster)} -P -m server.worker merge",
    ]
    return "\n".join(body) + "\n"


def input_files(job: Job) -> dict[str, bytes]:
    """The simulation's input as files under input/ (editor input as input.json)."""
    if job.input_type == "editor":
        return {f"{INPUT}/input.json": orjson.dumps(job.input)}
    return {f"{INPUT}/{name}": text.encode() for name, text in job.input.items()}


def job_name(job_id: str) -> str:
    """The SLURM name of a simulation's job array (its merge job adds `-merge`): the whole
    job_id, so that the reconciler can tell whose a job is when its id never reached us."""
    return f"yaptide-{job_id}"


def submit_command(job: Job, job_dir: str) -> str:
    """The shell line that submits both jobs, the key read from stdin; prints both ids (a job
    whose id cannot be printed is cancelled)."""
    directory = shlex.quote(job_dir)
    name = shlex.quote(job_name(job.job_id))
    common = f"sbatch --parsable --export=ALL --chdir={directory}"
    array = (
        f"{common} --job-name={name} --array=1-{job.ntasks} "
        f"--output={shlex.quote(job_dir + '/' + task_output('%a'))} {ARRAY_SCRIPT}"
    )
    merge = (
        f'{common} --job-name={name}-merge --dependency="afterany:${{array%%;*}}" '
        f"--output={shlex.quote(job_dir + '/' + MERGE_OUTPUT)} {MERGE_SCRIPT}"
    )
    # An id that cannot be told to the server (it gave up on the command, the connection
    # broke while sbatch waited for slurmctld) is a job nobody could cancel: cancelled here.
    # SIGPIPE ignored, so that echo fails rather than kills the shell.
    told_array = '{ echo "array $array" || { scancel "${array%%;*}"; exit 1; }; }'
    told_merge = '{ echo "merge $merge" || { scancel "${array%%;*}" "${merge%%;*}"; exit 1; }; }'
    return (
        f"trap '' PIPE && IFS= read -r {KEY_VARIABLE} && export {KEY_VARIABLE} && "
        f"cd {directory} && array=$({array}) && {told_array} && merge=$({merge}) && {told_merge}"
    )


def parse_submitted(stdout: str) -> tuple[int | None, int | None]:
    """(array id, merge id) from submit_command's output; None for what was not submitted."""
    ids: dict[str, int] = {}
    for line in stdout.splitlines():
        kind, _, value = line.partition(" ")
        number = value.split(";")[0].strip()
        if kind in ("array", "merge") and number.isdigit():
            ids[kind] = int(number)
    return ids.get("array"), ids.get("merge")


def scancel_command(*job_ids: int) -> str:
    return "scancel " + " ".join(str(job_id) for job_id in job_ids)


# scancel's complaint about one job (`scancel: error: Kill job error on job id 12: <reason>`),
# and the reasons that mean there is nothing left to cancel.
_KILL_ERROR = re.compile(r"Kill job error on job id (\d+)\S*: (.*)")
_GONE = ("Invalid job id specified", "Job/step already completing or completed")


def scancelled(job_ids: Sequence[int], returncode: int, stderr: str) -> list[int]:
    """Of the jobs given to scancel, those SLURM need not be told again: all when it succeeded
    (SLURM 22.05 also says nothing of a job it does not know), else those it names as unknown or
    already ended; the others are retried (another scancel of a cancelled job is harmless)."""
    if returncode == 0:
        return list(job_ids)
    gone = {int(m[1]) for m in _KILL_ERROR.finditer(stderr) if m[2].strip().startswith(_GONE)}
    return [job_id for job_id in job_ids if job_id in gone]


# The running user's jobs, array tasks one per line, ended ones too (until MinJobAge):
# array job id | array task id | job id | state | reason | name (last: a name may hold `|`).
# The text form rather than --json: SLURM 22.05 ignores filters (--me) with --json, so it
# would send every user's jobs.
SQUEUE_COMMAND = "squeue --noheader --array --states=all --me --format='%F|%K|%A|%T|%r|%j'"


def jobcomp_command(path: str, job_ids: list[int]) -> str:
    """The jobcomp/filetxt lines of some jobs (final states after SLURM forgets them): `JobId=N `
    matches a plain job's line and, inside `ArrayJobId=N `, the lines of an array's tasks."""
    patterns = " ".join(f"-e 'JobId={job_id} '" for job_id in job_ids)
    return f"grep -h -F {patterns} -- {shlex.quote(path)} || true"
