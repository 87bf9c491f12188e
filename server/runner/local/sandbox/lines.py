"""The bwrap command lines of sandboxed tasks: what each one hides and shows, and as whom the
task runs (the sandbox as a whole: server.runner.local.sandbox)."""

import contextlib
import errno
import os
import shlex
import shutil
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from server.config import PROJECT_DIR, Config
from server.runner.local.process import Launch, work_dir
from server.runner.local.sandbox import syscalls
from server.runner.local.sandbox.jobusers import covers, job_account, way_to

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
    as their job's user, in a second bwrap that forbids them user namespaces; `bpf`: the
    filter of their system calls (server.runner.local.sandbox.syscalls), if any."""

    bwrap: str
    setpriv: str | None = None
    inner: bool = False
    bpf: bytes | None = None


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


def isolation(sandbox: Sandbox, bpf_fds: tuple[int, ...]) -> list[str]:
    """The namespaces and the read-only host, before any path is hidden: a user namespace of
    the sandbox's own, or (as root, to become the job's user) root's setup capabilities only,
    and a /dev/shm for that user; the filter of system calls, read from `bpf_fds` (one, or none)."""
    if sandbox.setpriv is None:
        users = ["--unshare-user", "--disable-userns", *_ids(), "--cap-drop", "ALL"]
        shm = []
    else:
        users = SETUP_CAPS
        shm = ["--perms", "1777", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
    host = ["--ro-bind", "/", "/", "--dev", "/dev", *shm, "--proc", "/proc"]
    bpf = [arg for fd in bpf_fds for arg in ("--seccomp", str(fd))]
    line = [sandbox.bwrap, "--die-with-parent", *users, *bpf, "--unshare-pid", "--unshare-ipc"]
    return [*line, *host]


def private_tmp() -> list[str]:
    return ["--perms", "1777", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]


@contextlib.contextmanager
def wrapped(
    config: Config, sandbox: Sandbox | None, argv: list[str], job_dir: Path, cwd: Path
) -> Iterator[Launch]:
    """`argv` as the runner starts it from `cwd` (the job directory or a task's), within this
    block: in the job's sandbox when there is one. A command that is not there fails to start
    as it does without one, rather than as a bwrap that started and failed. Tasks that run as
    their job's user get the job directory and their own (blocking: a few system calls)."""
    if sandbox is None:
        yield Launch(argv, cwd)
        return
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    if sandbox.setpriv is not None:
        account = job_account(job_dir)
        for directory in dict.fromkeys((job_dir, cwd)):  # 0700: the job's user's alone
            os.chown(directory, account, account, follow_symlinks=False)
    with syscalls.descriptor(sandbox.bpf) as fds:
        line = wrap(config, sandbox, argv, job_dir, cwd, fds)
        yield Launch(line, Path("/"), fds)


def wrap(
    config: Config,
    sandbox: Sandbox,
    argv: list[str],
    job_dir: Path,
    cwd: Path,
    bpf_fds: tuple[int, ...],
) -> list[str]:
    """`argv` run in the sandbox of the job in `job_dir`, from `cwd` (a directory in it), its
    filter read from `bpf_fds`."""
    shown, job, account = shown_dirs(config, argv), job_dir.resolve(), job_account(job_dir)
    as_job = sandbox.setpriv is not None
    line = [*isolation(sandbox, bpf_fds), *private_tmp()]
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
