"""Where SLURM commands run: this host (a login node) or a cluster's login node over SSH.

Both run one shell command line at a time, with optional standard input (the only way a secret
reaches sbatch: never in argv), write a job's files, and read the tail of an output file. The
SSH one is server/runner/slurm/ssh.py.
"""

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.runner.local.jobfiles import make_job_dir
from server.runner.local.process import PRIVATE_ENV, output_tail

COMMAND_TIMEOUT = 60.0

log = logging.getLogger(__name__)


class ShellError(Exception):
    """The command could not be run (the cluster is unreachable, a timeout)."""


def failure(what: str, exc: BaseException, private: bool = False) -> ShellError:
    """ShellError: `what` failed, and why. Its message becomes the job's log `slurm`, which
    its user reads: what may name the operator's settings (a file's path: the key file, the
    server's directories; with `private`, any detail: a failed login names the cluster's
    account and host) is left out and logged instead."""
    if private or (isinstance(exc, OSError) and exc.filename is not None):
        log.warning("%s: %s", what, exc)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        return ShellError(f"{what}: {reason or type(exc).__name__} (see the server's log)")
    return ShellError(f"{what}: {str(exc) or type(exc).__name__}")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Shell(Protocol):
    async def run(self, command: str, stdin: str = "", retry: bool = False) -> Completed:
        """Run `command` with `sh`; `retry`: safe to run twice (reconnect once if needed)."""
        ...

    async def write_files(self, directory: str, files: dict[str, bytes]) -> None:
        """Create `directory` (and parents) and write `files` (relative names) into it."""
        ...

    async def read_tail(self, path: str) -> str:
        """The last 64 KiB of a text file ("" when it cannot be read)."""
        ...

    async def close(self) -> None: ...


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write `data` to a command's standard input and close it. A command may end without
    reading it all (sh finds no such command): asyncio's loop then raises BrokenPipeError,
    uvloop RuntimeError (its pipe is closed); either way the exit status says what happened."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _communicate(process: asyncio.subprocess.Process, stdin: str) -> tuple[bytes, bytes]:
    """`process.communicate(stdin)` on either event loop: its output, the input fed meanwhile."""
    assert process.stdin and process.stdout and process.stderr  # all three are pipes
    _, out, err = await asyncio.gather(
        _feed(process.stdin, stdin.encode()), process.stdout.read(), process.stderr.read()
    )
    await process.wait()
    return out, err


class LocalShell:
    """Commands on this host, with the server's environment minus its secrets."""

    async def run(self, command: str, stdin: str = "", retry: bool = False) -> Completed:
        env = {name: value for name, value in os.environ.items() if name not in PRIVATE_ENV}
        try:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # a group of its own: the shell and what it started
            )
        except OSError as exc:
            raise failure("cannot run /bin/sh", exc) from None
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                out, err = await _communicate(process, stdin)
        except BaseException as exc:
            # Timed out, or cancelled (the server stops): the command must not outlive us, nor
            # what the shell started (an sbatch waiting for a stalled controller would hold
            # the pipes open, and a stopping server with them).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.communicate())
            if isinstance(exc, TimeoutError):
                raise ShellError(f"timed out after {COMMAND_TIMEOUT:.0f} s") from None
            raise
        return Completed(
            process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def write_files(self, directory: str, files: dict[str, bytes]) -> None:
        try:
            await asyncio.to_thread(_write_files, Path(directory), files)
        except OSError as exc:  # full disk, no permission, a file in the way: like SSH's
            raise failure("cannot write the job's files", exc) from None

    async def read_tail(self, path: str) -> str:
        return await asyncio.to_thread(output_tail, Path(path))

    async def close(self) -> None:
        return None


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    make_job_dir(directory)
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
