"""What the worker and the runners that start it say the same way: how a process ended, and the
name of the log file that explains a failed merge step."""

import signal

MERGE_LOG = "merge"


def describe_exit(returncode: int) -> str:
    """`exited with code 3`, `was killed by SIGKILL`: the end of a sentence about a process."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
