"""Job and task states and every rule for moving between them (pure: no I/O, no aiohttp).

api.md "Worker-facing endpoints": tasks go PENDING -> RUNNING -> COMPLETED | FAILED, any
non-terminal state may go to CANCELED, and repeating the current state is accepted (a retried
request must not fail). A worker may also report only a task's end, PENDING -> COMPLETED |
FAILED, as the seed's `POST /tasks` example does (the seeds win over api.md). Jobs, through `POST /jobs`, only move forward: MERGING_QUEUED ->
MERGING_RUNNING, or any non-terminal state -> FAILED. The job state otherwise follows from its
tasks and stored results: the recompute_job_state query (sql/queries/simulations.sql).
"""

from server.errors import Conflict

JOB_STATES = (
    "UNKNOWN",
    "PENDING",
    "RUNNING",
    "MERGING_QUEUED",
    "MERGING_RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELED",
)
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})

_TASK_MOVES = {
    ("PENDING", "RUNNING"),
    ("PENDING", "COMPLETED"),
    ("PENDING", "FAILED"),
    ("RUNNING", "COMPLETED"),
    ("RUNNING", "FAILED"),
}
_JOB_MOVES = {("MERGING_QUEUED", "MERGING_RUNNING")}


def check_task_move(task_id: int, current: str, new: str) -> None:
    """409 unless a worker may move the task from `current` to `new`."""
    if new == current or (current, new) in _TASK_MOVES:
        return
    if new == "CANCELED" and current not in TERMINAL_STATES:
        return
    raise Conflict(f"Task {task_id} cannot go from {current} to {new}")


def check_job_move(current: str, new: str) -> None:
    """409 unless `POST /jobs` may move the (non-terminal) job from `current` to `new`."""
    if new == current or (current, new) in _JOB_MOVES or new == "FAILED":
        return
    raise Conflict(f"Job cannot go from {current} to {new}")


def check_open(state: str) -> None:
    """409 once a job is terminal: its update key is dead, no worker update is accepted."""
    if state in TERMINAL_STATES:
        raise Conflict(f"Simulation is {state}: no more updates are accepted")
