"""What SLURM says about our jobs: squeue's lines and the jobcomp file, parsed into one view.

squeue knows a job until `MinJobAge` after its end; after that the final state comes from the
jobcomp/filetxt file (`JobCompType=jobcomp/filetxt`, `JobCompLoc`), one `Key=Value ...` line per
finished job, array tasks with `ArrayJobId=`/`ArrayTaskId=`. (`sacct -c` reads the same file but
drops the array ids, so it cannot tell which task a line is about.)
"""

import re
from dataclasses import dataclass, field

# Job states of a job that has ended (squeue %T, jobcomp JobState); anything else is alive.
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
_PAIR = re.compile(r"(\w+)=(\S*)")
# The name sbatch.job_name gives a simulation's jobs: the job_id it belongs to.
_NAMED = re.compile(
    r"yaptide-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:-merge)?"
)


@dataclass(frozen=True)
class JobState:
    state: str
    reason: str  # squeue's reason, or the exit code from the jobcomp file

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def describe(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state


@dataclass
class Snapshot:
    """States by (array job id, task id) for array tasks and by job id for plain jobs."""

    tasks: dict[tuple[int, int], JobState] = field(default_factory=dict)
    jobs: dict[int, JobState] = field(default_factory=dict)
    # Jobs not ended that are named after a simulation: {array or plain job id: its job_id}.
    named: dict[int, str] = field(default_factory=dict)


def _state(text: str) -> str:
    return text.split()[0] if text else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED


def parse_squeue(output: str) -> Snapshot:
    """Lines of `%F|%K|%A|%T|%r|%j` (sbatch.SQUEUE_COMMAND)."""
    snapshot = Snapshot()
    for line in output.splitlines():
        parts = line.strip().split("|", 5)
        if len(parts) != 6 or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        array, task, job, state, reason, name = parts
        found = JobState(_state(state), "" if reason == "None" else reason)
        if task.isdigit():
            snapshot.tasks[int(array), int(task)] = found
        else:
            snapshot.jobs[int(job)] = found
        if (named := _NAMED.fullmatch(name)) and not found.ended:
            snapshot.named[int(array)] = named[1]
    return snapshot


def add_jobcomp(snapshot: Snapshot, text: str) -> None:
    """Add final states from jobcomp lines for what squeue no longer knows."""
    for line in text.splitlines():
        values = dict(_PAIR.findall(line))
        job, state = values.get("JobId", ""), values.get("JobState", "")
        if not job.isdigit() or not state:
            continue
        found = JobState(_state(state), f"exit code {values.get('ExitCode', '?')}")
        array, task = values.get("ArrayJobId", ""), values.get("ArrayTaskId", "")
        if array.isdigit() and task.isdigit() and int(array) < 2**32 - 2:
            snapshot.tasks.setdefault((int(array), int(task)), found)
        else:
            snapshot.jobs.setdefault(int(job), found)
