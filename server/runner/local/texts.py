"""What the local runner tells a simulation's owner in its log files: why it was FAILED when
the server stopped or started again (the log file RUNNER_LOG), or when its merge step posted no
results."""

RUNNER_LOG = "runner"
MERGE_TEXT = "The merge step {exit} without posting results.\n\nLast output:\n{tail}"


def _failed(task_ids: list[int]) -> str:
    """What was marked FAILED: unfinished tasks, or (none: all had ended) the simulation whose
    results were being merged."""
    if task_ids:
        return f"unfinished tasks ({', '.join(map(str, task_ids))}) were marked FAILED"
    return "its tasks had ended, but their results were not merged: it was marked FAILED"


def restart_text(task_ids: list[int]) -> str:
    return (
        "The server stopped before this simulation finished. Its worker processes and its "
        f"update key did not survive, so it cannot be resumed: {_failed(task_ids)} when the "
        "server started again. Submit the simulation again to rerun it."
    )


def shutdown_text(task_ids: list[int]) -> str:
    return (
        f"The server shut down before this simulation finished: {_failed(task_ids)}. Submit "
        "the simulation again to rerun it."
    )
