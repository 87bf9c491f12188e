"""The sandbox of the local runner's workers (bubblewrap's `bwrap`): what a simulation's
processes cannot see of this host.

A worker, and the simulator it starts, run as this server's account on input files a user
wrote. Without a sandbox, a simulator that can be made to read a file its input names (and to
echo it into its output, which the user gets back as a log) reads whatever this account can:
the token signing secret, the embedded database's files and socket, other users' job
directories, the configuration. In the sandbox they see the host's files read-only, except:

- their own job directory, read-write at its own path, and a private /tmp (a small tmpfs);
- the data directory, `runner.work_dir`, PostgreSQL's socket directories (socket_dirs),
  `~/.ssh`: empty;
  the configuration file, the clusters' SSH key files, libpq's password and service files
  (`~/.pgpass`, `~/.pg_service.conf`, `$PGPASSFILE`, `$PGSERVICEFILE`) and the SSH agent's
  socket: unreadable (EACCES: /dev/null in their place, on a mount without devices);
- this project, the Python running it, and the directories of the worker command, the
  converter and the simulators stay visible (read-only) when they are under /tmp;
- processes: their own only (a PID namespace), so neither the server's environment nor another
  worker's (its update key); they run as an unprivileged user of a user namespace of their own
  (mapped to this account), with no capabilities, so they cannot undo any of this.

A server run as root would map that user to root, the owner of /etc/shadow, SSH host keys and
root's own files. So under root, bwrap sets the sandbox up with root's privileges and the
processes then run (setpriv) as a user and group of their job's own, with no capabilities
(server.runner.local.jobusers), in a second bwrap of that user's own that forbids them user
namespaces. Where that cannot work (no setpriv), the sandbox maps to root as before, and the
start says so.

They reach the server over the host's network, as before, and are killed when the server ends
(`--die-with-parent`). `runner.sandbox`: "auto" (the default) sandboxes when bwrap works on
this host and warns once at start when it does not; "on" refuses to start the runner without
it; "off" runs workers as plain processes.
"""

import asyncio
import errno
import logging
import os
import shlex
import shutil
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from server.config import PROJECT_DIR, Config, ConfigError
from server.runner.local.jobusers import JOB_ACCOUNTS, covers, job_account, warn_closed, way_to
from server.runner.local.process import work_dir, worker_command

log = logging.getLogger(__name__)

TMP_SIZE = 256 << 20  # the private /tmp: simulators write their files in their task directory
SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql")
NOBODY = 65534  # the user inside a sandbox mapped to root (root inside keeps capabilities)
SHM_SIZE = 64 << 20  # /dev/shm, the job user's (the host's is root's)
# Root's capabilities in the sandbox until setpriv: what it needs, and DAC_OVERRIDE for bwrap to
# enter the job directory (its user's, 0700).
SETUP = ("SETUID", "SETGID", "SETPCAP", "DAC_OVERRIDE")
SETUP_CAPS = ["--cap-drop", "ALL", *(item for cap in SETUP for item in ("--cap-add", f"CAP_{cap}"))]


class Sandbox(NamedTuple):
    """How the runner sandboxes its workers: `bwrap`, and `setpriv` when they are to run as
    their job's user (this server runs as root), else None (as this account, mapped); `inner`:
    as their job's user, in a second bwrap that forbids them user namespaces."""

    bwrap: str
    setpriv: str | None = None
    inner: bool = False


def hidden_dirs(config: Config) -> list[Path]:
    home = Path.home()
    found = [config.data_dir, work_dir(config), home / ".ssh", *socket_dirs(config.database.url)]
    return _existing(found, Path.is_dir)


def socket_dirs(url: str) -> list[Path]:
    """Where PostgreSQL's Unix sockets may be: the usual places, and the directories the
    database URL (`host=/dir` or `postgresql://%2Fdir/db`) or PGHOST name. Through them this
    account connects without a password (peer authentication) as the server's own role."""
    parts = urllib.parse.urlsplit(url)
    hosts = urllib.parse.parse_qs(parts.query).get("host", [])
    hosts += [urllib.parse.unquote(parts.netloc.rpartition("@")[2]), os.environ.get("PGHOST", "")]
    named = [host for value in hosts for host in value.split(",") if host.startswith("/")]
    return [Path(directory) for directory in (*SOCKET_DIRS, *named)]


def hidden_files(config: Config) -> list[Path]:
    keys = [Path(cluster.key_file).expanduser() for cluster in config.clusters if cluster.key_file]
    libpq = [os.environ.get(name, "") for name in ("PGPASSFILE", "PGSERVICEFILE")]
    found = [*keys, Path.home() / ".pgpass", Path.home() / ".pg_service.conf"]
    found += [Path(path) for path in libpq if path]
    if config.file:
        found.append(Path(config.file))
    agent = os.environ.get("SSH_AUTH_SOCK")  # the SSH agent's socket: it signs for us
    sockets = _existing([Path(agent)], Path.is_socket) if agent else []
    return _existing(found, Path.is_file) + sockets


def shown_dirs(config: Config, argv: list[str]) -> list[Path]:
    """What a task needs even where it is under /tmp: this project and the Python running it
    (the built-in worker), and the directories of the programs a task runs: the worker command
    (`argv`), the converter and the simulators, as this host's PATH finds them (a bare name not
    found is left out)."""
    commands = [argv[0], config.simulators.shieldhit, config.simulators.fluka]
    if config.runner.converter:
        commands.append(shlex.split(config.runner.converter)[0])
    found = [Path(path).resolve().parent for path in map(shutil.which, commands) if path]
    pythons = [Path(sys.prefix), Path(sys.base_prefix)]
    return _existing([PROJECT_DIR, *pythons, *found], Path.is_dir)


def _existing(paths: list[Path], kind: Callable[[Path], bool]) -> list[Path]:
    """`paths` that exist (of `kind`: Path.is_dir or Path.is_file), absolute, once each."""
    resolved = [path.resolve() for path in paths]
    return list(dict.fromkeys(path for path in resolved if kind(path)))


def _ids() -> list[str]:
    uid, gid = os.getuid() or NOBODY, os.getgid() or NOBODY
    return ["--uid", str(uid), "--gid", str(gid)]


def run_as(sandbox: Sandbox, account: int, cwd: str) -> list[str]:
    """setpriv's line to become `account` with no capability kept nor gained, then to go to
    `cwd` as that user (a task may have made it a link to anywhere: root's setup would enter
    it), in the inner bwrap: the host as the sandbox shows it, in a user namespace that may make
    none (as root, the outer bwrap makes none). None when mapped: that bwrap goes to `cwd`."""
    if sandbox.setpriv is None:
        return []
    ids = ["--reuid", str(account), "--regid", str(account), "--clear-groups"]
    line = [sandbox.setpriv, *ids, "--inh-caps=-all", "--bounding-set=-all", "--"]
    if not sandbox.inner:
        return [*line, shutil.which("env", path=os.defpath) or "env", f"--chdir={cwd}", "--"]
    inner = ["--die-with-parent", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/"]
    return [*line, sandbox.bwrap, *inner, "--chdir", cwd, "--"]


def isolation(sandbox: Sandbox) -> list[str]:
    """The namespaces and the read-only host, before any path is hidden: a user namespace of
    the sandbox's own, or (as root, to become the job's user) root's setup capabilities only,
    and a /dev/shm for that user."""
    if sandbox.setpriv is None:
        users = ["--unshare-user", "--disable-userns", *_ids(), "--cap-drop", "ALL"]
        shm = []
    else:
        users = SETUP_CAPS
        shm = ["--perms", "1777", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
    host = ["--ro-bind", "/", "/", "--dev", "/dev", *shm, "--proc", "/proc"]
    return [sandbox.bwrap, "--die-with-parent", *users, "--unshare-pid", "--unshare-ipc", *host]


def private_tmp() -> list[str]:
    return ["--perms", "1777", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]


def wrapped(
    config: Config, sandbox: Sandbox | None, argv: list[str], job_dir: Path, cwd: Path
) -> list[str]:
    """`argv` as the runner starts it from `cwd` (the job directory or a task's): in the job's
    sandbox when there is one. A command that is not there fails to start as it does without
    one, rather than as a bwrap that started and failed. Tasks that run as their job's user
    get the job directory and their own (blocking: a few system calls)."""
    if sandbox is None:
        return argv
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    if sandbox.setpriv is not None:
        account = job_account(job_dir)
        for directory in dict.fromkeys((job_dir, cwd)):  # 0700: the job's user's alone
            os.chown(directory, account, account, follow_symlinks=False)
    return wrap(config, sandbox, argv, job_dir, cwd)


def wrap(config: Config, sandbox: Sandbox, argv: list[str], job_dir: Path, cwd: Path) -> list[str]:
    """`argv` run in the sandbox of the job in `job_dir`, from `cwd` (a directory in it)."""
    shown, job, account = shown_dirs(config, argv), job_dir.resolve(), job_account(job_dir)
    as_job = sandbox.setpriv is not None
    line = [*isolation(sandbox), *private_tmp()]
    for directory in covers([*shown, job], account) if as_job else []:
        line += ["--perms", "0755", "--tmpfs", str(directory)]
    for directory in shown:  # first: what is hidden in them stays hidden
        line += [*(way_to(directory) if as_job else ()), "--ro-bind", *[str(directory)] * 2]
    for directory in hidden_dirs(config):
        line += ["--tmpfs", str(directory)]
    for file in hidden_files(config):
        line += ["--ro-bind", os.devnull, str(file)]
    line += [*(way_to(job) if as_job else ()), "--bind", str(job), str(job)]
    where = str(job / cwd.relative_to(job_dir))  # not resolved: the sandbox follows its links
    chdir = "/" if as_job else where
    return [*line, "--chdir", chdir, "--", *run_as(sandbox, account, where), *argv]


async def find(config: Config) -> Sandbox | None:
    """The sandbox to run workers in: None when runner.sandbox is "off", or "auto" and bwrap
    does not work here (with "on": a ConfigError saying why)."""
    if config.runner.sandbox == "off":
        return None
    bwrap = shutil.which("bwrap")
    why: str | None = "bwrap (Debian package bubblewrap) is not installed"
    if bwrap is not None and (why := await _fails(Sandbox(bwrap))) is None:
        return await _as_jobs(config, bwrap) if os.getuid() == 0 else Sandbox(bwrap)
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


async def _fails(sandbox: Sandbox) -> str | None:
    """Why the sandbox cannot start here (no user namespaces, ...), or None when it can."""
    try:
        process = await asyncio.create_subprocess_exec(
            *isolation(sandbox),
            *private_tmp(),  # (bwrap before 0.8 lacks --size or --disable-userns)
            "--",
            *run_as(sandbox, JOB_ACCOUNTS, "/"),
            shutil.which("true", path=os.defpath) or "true",  # not on every PATH
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, error = await process.communicate()
    except OSError as exc:
        return f"bwrap could not start: {exc.strerror or exc}"
    if process.returncode != 0:
        return f"bwrap does not work here: {error.decode(errors='replace').strip()}"
    return None
