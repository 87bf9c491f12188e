"""An sshd on a loopback port for the SSH cluster tests: key-only login as a user the tests make.

The host key and the client key are made for the session (`ssh-keygen`, no passphrase); the
user (`yaptide-ssh-<n>`) is created with `useradd` and removed at the end. The user's password
field is set to `*` (not locked): sshd without PAM refuses locked accounts even for keys.
"""

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.slurm.cluster import ClusterError, alive, free_port

_SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
AllowUsers {user}
PermitRootLogin no
SetEnv SLURM_CONF={slurm_conf}
Subsystem sftp internal-sftp
LogLevel ERROR
"""


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    home: Path  # the user's home: the remote work directory goes below it
    client_key: Path
    known_hosts: Path
    directory: Path  # its configuration, keys and pid file


def _keygen(path: Path, comment: str) -> None:
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    subprocess.run(argv, check=True, capture_output=True)


def _make_user(home: Path) -> str:
    user = f"yaptide-ssh-{os.getpid()}"
    argv = ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/bash", user]
    subprocess.run(argv, check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
    return user


def remove_user(user: str) -> None:
    subprocess.run(["userdel", "--remove", user], capture_output=True)


@contextlib.contextmanager
def ssh_server(directory: Path, slurm_conf: Path):  # type: ignore[no-untyped-def]
    """Start sshd for a fresh user; yields an SshServer, stops sshd and removes the user."""
    directory.mkdir(parents=True, exist_ok=True)
    user = _make_user(directory / "home")
    try:
        server = _start(directory, user, slurm_conf)
        try:
            yield server
        finally:
            _stop(directory)
    finally:
        remove_user(user)


def _start(directory: Path, user: str, slurm_conf: Path) -> SshServer:
    _keygen(directory / "host_key", "yaptide-test-host")
    _keygen(directory / "client_key", "yaptide-test-client")
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "client_key.pub").read_text())
    port = free_port()
    config = directory / "sshd_config"
    # SetEnv: the session finds the test cluster like a login node finds its own.
    text = _SSHD_CONFIG.format(port=port, dir=directory, user=user, slurm_conf=slurm_conf)
    config.write_text(text)
    home = Path(pwd.getpwnam(user).pw_dir)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    done = subprocess.run(["/usr/sbin/sshd", "-f", str(config)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"sshd did not start: {done.stderr.strip()}")
    host_key = (directory / "host_key.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    _wait_pid(directory / "sshd.pid")
    return SshServer(
        "127.0.0.1", port, user, home, directory / "client_key", known_hosts, directory
    )


def _wait_pid(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise ClusterError("sshd did not write its pid file")
        time.sleep(0.05)


def _stop(directory: Path) -> None:
    try:
        pid = int((directory / "sshd.pid").read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _processes(directory: Path) -> list[int]:
    """sshd's listener and everything under it (the processes serving each connection)."""
    try:
        found = [int((directory / "sshd.pid").read_text().strip())]
    except (OSError, ValueError):
        return []
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    for pid in found:  # grows while it is walked: children, then theirs
        found += [child for child, parent in parents.items() if parent == pid]
    return found


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


@contextlib.contextmanager
def frozen(server: SshServer) -> Iterator[None]:
    """The login node stops answering (SIGSTOP to sshd and its connections) but connections
    stay open, as behind a network black hole; SIGCONT on the way out."""
    pids = _processes(server.directory)
    _signal(pids, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal(pids, signal.SIGCONT)


@contextlib.contextmanager
def stopped(server: SshServer) -> Iterator[None]:
    """The login node refuses SSH (sshd and its connections killed); on the way out, sshd is
    started again with the same configuration, port and host key."""
    pids = _processes(server.directory)
    _signal(pids, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    (server.directory / "sshd.pid").unlink(missing_ok=True)
    try:
        yield
    finally:
        config = server.directory / "sshd_config"
        subprocess.run(["/usr/sbin/sshd", "-f", str(config)], check=True, capture_output=True)
        _wait_pid(server.directory / "sshd.pid")
