"""The files the server itself writes and reads in a job directory (its layout:
server/worker/jobdir.py), where the job's own processes write too (read-write in their sandbox:
server/runner/local/sandbox/).

A task may put anything in the place of a name the server uses later: a symbolic link to a file
of the server's account (a task log of the next task, made to write over it; its own log, made
to read the signing secret back as its `task_<n>_output`), a FIFO (an open that waits for ever),
a link to another directory (`input`, whose files the next task gets as hard links). So the
server opens every name in a job directory relative to a directory it opened itself, never
following a link (O_NOFOLLOW), without waiting (O_NONBLOCK); an output file it writes or reads
back must be a regular file (of one link, to be written), and the hard links it makes are of
the names themselves. What is not so fails as a file that could not be written (the task or
merge step FAILED, saying so), or reads as empty.

`<work_dir>/<job_id>` itself is the server's (the sandbox sees it as a mount point, which it
cannot replace), as is everything above it.
"""

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from server.runner import Job
from server.worker import jobdir
from server.worker.jobdir import INPUT, RESULTS_MANIFEST

NOT_FOLLOWED = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NOT_PLAIN = "not a plain file (something else was put in its place)"


def task_dir(job_directory: Path, task_id: int) -> Path:
    return job_directory / jobdir.task_dir(task_id)


def output_file(job_directory: Path, task_id: int) -> Path:
    """Where a task's stdout and stderr go: beside its working directory, not inside it."""
    return job_directory / jobdir.task_output(task_id)


def merge_output_file(job_directory: Path) -> Path:
    return job_directory / jobdir.MERGE_OUTPUT


def make_job_dir(path: Path) -> None:
    """The job directory `path` (if missing), for this server's account only: it holds one
    user's inputs, results and logs, which no other account of the host may read."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


@contextlib.contextmanager
def opened_dir(name: str | Path, parent: int | None = None) -> Iterator[int]:
    """A descriptor of the directory `name` (in `parent`, a descriptor), not a link to one."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOT_FOLLOWED, dir_fd=parent)
    try:
        yield fd
    finally:
        os.close(fd)


def open_output(path: Path) -> int:
    """A descriptor of the file `path`, emptied, to write a process's output into."""
    with opened_dir(path.parent) as parent:
        fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | NOT_FOLLOWED, 0o666, dir_fd=parent)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
            raise OSError(errno.EPERM, NOT_PLAIN, path.name)  # as os.open names it
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_tail(path: Path, size: int) -> bytes:
    """The last `size` bytes of the file `path`: empty when it is missing or not a file."""
    try:
        with opened_dir(path.parent) as parent:
            fd = os.open(path.name, os.O_RDONLY | NOT_FOLLOWED, dir_fd=parent)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        os.lseek(fd, max(0, os.lseek(fd, 0, os.SEEK_END) - size), os.SEEK_SET)
        return _read_all(fd)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def inputs_written(job_directory: Path) -> bool:
    """Whether the job's one copy of its input files (write_inputs) is in place (a directory or
    not, something is: write_inputs takes only a directory)."""
    return os.path.lexists(job_directory / INPUT)


def write_inputs(job_directory: Path, task_id: int, job: Job) -> None:
    """Create the task's directory with the simulation's input files (blocking: use a thread).

    The files are hard links to the job's one copy, `<job_dir>/input` (written on first use),
    so a simulation of many tasks takes the disk space of its input once. A program that
    changes an input file must replace it (write a new file, rename it over), as the built-in
    worker does, not write into it."""
    make_job_dir(job_directory)
    with opened_dir(job_directory) as job_fd:
        if not inputs_written(job_directory):
            _write_shared(job_fd, job)
        name = task_dir(job_directory, task_id).name
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=job_fd)
        with opened_dir(INPUT, job_fd) as source, opened_dir(name, job_fd) as target:
            for file in os.listdir(source):
                with contextlib.suppress(FileExistsError):  # a task started before
                    os.link(file, file, src_dir_fd=source, dst_dir_fd=target, follow_symlinks=False)


def _write_shared(job_fd: int, job: Job) -> None:
    """`input`, written beside it and renamed into place, so tasks starting at once never see
    half of it; a copy that could not be written whole (a full work_dir) is removed, not left
    taking space."""
    partial = f"{INPUT}.{os.getpid()}.{uuid.uuid4().hex}"
    os.mkdir(partial, dir_fd=job_fd)
    try:
        with opened_dir(partial, job_fd) as fd:
            os.fchmod(fd, 0o755)  # whatever the umask: readable by the job's user (as root)
            for name, data in _files(job):
                _create(fd, name, data)
        os.rename(partial, INPUT, src_dir_fd=job_fd, dst_dir_fd=job_fd)
    except OSError:  # not whole, or another task put its copy in place first (taken)
        shutil.rmtree(partial, ignore_errors=True, dir_fd=job_fd)
        if not _is_dir(job_fd, INPUT):
            raise


def _is_dir(dir_fd: int, name: str) -> bool:
    """Whether `name` in `dir_fd` is a directory (not a link to one)."""
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _files(job: Job) -> Iterator[tuple[str, bytes]]:
    if job.input_type == "editor":
        yield "input.json", orjson.dumps(job.input)
        return
    for name, text in job.input.items():  # names were checked to be plain base names
        yield name, text.encode()


def _create(dir_fd: int, name: str, data: bytes) -> None:
    """An input file: the server's, read-only to the job's processes whatever the umask (under
    root they run as a user of their job's own: server/runner/local/sandbox/)."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOT_FOLLOWED, 0o644, dir_fd=dir_fd)
    os.fchmod(fd, 0o644)
    with open(fd, "wb") as file:
        file.write(data)


def drop_results_list(job_directory: Path, task_id: int) -> None:
    """Remove a failed task's list of result files: they are not merged."""
    name = task_dir(job_directory, task_id).name
    # No task directory (never made): no list either.
    with (
        contextlib.suppress(OSError),
        opened_dir(job_directory) as job,
        opened_dir(name, job) as fd,
    ):
        os.unlink(RESULTS_MANIFEST, dir_fd=fd)
