"""Which sandbox this host gives its tasks, found at the start by trying each part of it (the
sandbox as a whole: server.runner.local.sandbox): bwrap, then as root setpriv and the inner
bwrap, then the filter of system calls. A part that does not work here is left out, and the
start says so in a WARNING.
"""

import asyncio
import logging
import os
import shutil

from server.config import Config, ConfigError
from server.runner.local.process import worker_command
from server.runner.local.sandbox import syscalls
from server.runner.local.sandbox.jobusers import JOB_ACCOUNTS, warn_closed
from server.runner.local.sandbox.lines import Sandbox, isolation, private_tmp, run_as, shown_dirs

log = logging.getLogger(__name__)


async def find(config: Config) -> Sandbox | None:
    """The sandbox to run workers in: None when runner.sandbox is "off", or "auto" and bwrap
    does not work here (with "on": a ConfigError saying why)."""
    if config.runner.sandbox == "off":
        return None
    bwrap = shutil.which("bwrap")
    why: str | None = "bwrap (Debian package bubblewrap) is not installed"
    if bwrap is not None and (why := await _fails(Sandbox(bwrap))) is None:
        return await _filtered(
            await _as_jobs(config, bwrap) if os.getuid() == 0 else Sandbox(bwrap)
        )
    if config.runner.sandbox == "on":
        raise ConfigError(f'runner.sandbox = "on", but {why}')
    log.warning(
        'runner.sandbox = "auto": no sandbox, as %s; simulations can read every file this '
        'account can (README, "The workers\' sandbox")',
        why,
    )
    return None


async def _as_jobs(config: Config, bwrap: str) -> Sandbox:
    """As root: the sandbox whose tasks run as their job's user, or (no setpriv, or it fails)
    the one mapped to root, said at the start."""
    setpriv = shutil.which("setpriv")
    why: str | None = "setpriv (Debian package util-linux) is not installed"
    if setpriv is not None and (why := await _fails(Sandbox(bwrap, setpriv))) is None:
        warn_closed(shown_dirs(config, worker_command(config)))
        return await _inner(Sandbox(bwrap, setpriv, inner=True))
    log.warning(
        "this server runs as root and its tasks cannot run as users of their own (%s): their "
        "sandbox maps them to root, and they read what root may outside the hidden paths "
        '(README, "The workers\' sandbox")',
        why,
    )
    return Sandbox(bwrap)


async def _inner(sandbox: Sandbox) -> Sandbox:
    """`sandbox`, whose tasks run in the inner bwrap when it works here; else without it, said at
    the start (where unprivileged user namespaces are off, tasks cannot make them either)."""
    why = await _fails(sandbox)
    if why is None:
        return sandbox
    log.warning(
        "tasks run as users of their jobs, but not in a bwrap of their own that forbids them user "
        "namespaces (%s): where this host lets any account make them, so may they",
        why,
    )
    return sandbox._replace(inner=False)


async def _filtered(sandbox: Sandbox) -> Sandbox:
    """`sandbox` with the filter of system calls when libseccomp and bwrap can apply it here;
    else without it, said at the start."""
    try:
        candidate = sandbox._replace(bpf=syscalls.program())
    except (ImportError, RuntimeError, OSError) as exc:  # pyseccomp: no libseccomp here
        why: str | None = f"no filter could be made: {exc}"
    else:
        if (why := await _fails(candidate)) is None:
            return candidate
    log.warning(
        "tasks run without a filter of their system calls (%s): they may use every part of the "
        'kernel this host lets any account use (README, "The workers\' sandbox")',
        why,
    )
    return sandbox


async def _fails(sandbox: Sandbox) -> str | None:
    """Why the sandbox cannot start here (no user namespaces, ...), or None when it can."""
    true = shutil.which("true", path=os.defpath) or "true"  # not on every PATH
    try:
        with syscalls.descriptor(sandbox.bpf) as fds:
            process = await asyncio.create_subprocess_exec(
                *isolation(sandbox, fds),
                *private_tmp(),  # (bwrap before 0.8 lacks --size or --disable-userns)
                "--",
                *run_as(sandbox, JOB_ACCOUNTS, "/"),
                true,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
            )
        _, error = await process.communicate()
    except OSError as exc:
        return f"bwrap could not start: {exc.strerror or exc}"
    if process.returncode != 0:
        return f"bwrap does not work here: {error.decode(errors='replace').strip()}"
    return None
