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

from server.config import PROJECT_DIR, Config, ConfigError
from server.runner.local.process import work_dir

log = logging.getLogger(__name__)

TMP_SIZE = 256 << 20  # the private /tmp: simulators write their files in their task directory
SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql")
NOBODY = 65534  # the user inside when this account is root (root inside keeps capabilities)


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


def isolation(bwrap: str) -> list[str]:
    """The namespaces and the read-only host, before any path is hidden."""
    return [
        bwrap,
        "--die-with-parent",
        "--unshare-user",
        "--disable-userns",
        *_ids(),
        "--unshare-pid",
        "--unshare-ipc",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]


def private_tmp() -> list[str]:
    return ["--size", str(TMP_SIZE), "--tmpfs", "/tmp"]


def wrapped(
    config: Config, bwrap: str | None, argv: list[str], job_dir: Path, cwd: Path
) -> list[str]:
    """`argv` as the runner starts it from `cwd` (the job directory or a task's): in the job's
    sandbox when there is one (`bwrap`). A command that is not there fails to start as it does
    without one, rather than as a bwrap that started and failed."""
    if bwrap is None:
        return argv
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return wrap(config, bwrap, argv, job_dir, cwd)


def wrap(config: Config, bwrap: str, argv: list[str], job_dir: Path, cwd: Path) -> list[str]:
    """`argv` run in the sandbox of the job in `job_dir`, from `cwd` (a directory in it)."""
    line = [*isolation(bwrap), *private_tmp()]
    for directory in shown_dirs(config, argv):  # first: what is hidden in them stays hidden
        line += ["--ro-bind", str(directory), str(directory)]
    for directory in hidden_dirs(config):
        line += ["--tmpfs", str(directory)]
    for file in hidden_files(config):
        line += ["--ro-bind", os.devnull, str(file)]
    job = str(job_dir.resolve())
    return [*line, "--bind", job, job, "--chdir", str(cwd.resolve()), "--", *argv]


async def find(config: Config) -> str | None:
    """The bwrap to run workers with: None when runner.sandbox is "off", or "auto" and bwrap
    does not work here (with "on": a ConfigError saying why)."""
    if config.runner.sandbox == "off":
        return None
    bwrap = shutil.which("bwrap")
    why = await _fails(bwrap) if bwrap else "bwrap (Debian package bubblewrap) is not installed"
    if why is None:
        return bwrap
    if config.runner.sandbox == "on":
        raise ConfigError(f'runner.sandbox = "on", but {why}')
    log.warning(
        'runner.sandbox = "auto": no sandbox, as %s; simulations can read every file this '
        'account can (README, "The workers\' sandbox")',
        why,
    )
    return None


async def _fails(bwrap: str) -> str | None:
    """Why the sandbox cannot start here (no user namespaces, ...), or None when it can."""
    try:
        process = await asyncio.create_subprocess_exec(
            *isolation(bwrap),
            *private_tmp(),  # (bwrap before 0.8 lacks --size or --disable-userns)
            "true",
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
