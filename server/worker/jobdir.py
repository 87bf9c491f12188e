"""The layout of a job directory: made by either runner (server/runner/local/jobfiles.py on this
host, server/runner/slurm/sbatch.py on a cluster), used by the worker and the merge step.

    input/                 the simulation's input files, once (editor input: input.json)
    task_<n>/              task n's working directory: its input files hard-linked (or copied)
    task_<n>/.yaptide_results.json   what task n produced, for the merge step
    task_<n>.log           task n's standard output and error, beside its directory
    merge.log              the merge step's
"""

import re

INPUT = "input"
MERGE_OUTPUT = "merge.log"
RESULTS_MANIFEST = ".yaptide_results.json"  # inputs are named [A-Za-z0-9]...: no clash
TASK_DIR = re.compile(r"task_(\d+)")  # a task's directory name, its task number captured


def task_dir(task: int | str) -> str:
    """The name of task `task`'s directory (a pattern for a shell or SLURM: `$task`, `*`)."""
    return f"task_{task}"


def task_output(task: int | str) -> str:
    """The name of task `task`'s output file (SLURM's `%a`: the array task's number)."""
    return f"task_{task}.log"
