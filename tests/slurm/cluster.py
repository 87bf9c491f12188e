"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd as plain processes.

Everything lives in one directory made for the session (outside pytest's tmp tree: the daemons
and the test user must reach it): the munge key and socket, a generated `slurm.conf`, the state
and spool directories, the logs and the jobcomp file. Client commands find the cluster through
`SLURM_CONF` (see `env`). Nothing outside the directory is touched, so it runs beside a system
SLURM or munge. Settings that work on these machines: ../../README.md "SLURM tests".
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")
_CONF = """\
ClusterName=yaptidetest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={dir}/ctld
SlurmdSpoolDir={dir}/d
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={dir}/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge={min_job_age}
InactiveLimit=0
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class ClusterError(Exception):
    """The cluster could not be started."""


def installed() -> bool:
    return all(shutil.which(name) or Path(f"/usr/sbin/{name}").exists() for name in DAEMONS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 9 // 10 // 1024
    return 1024


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not count: kill -0 succeeds on one)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


class Cluster:
    """One node, one partition (`debug`); `start()` returns once the node is idle."""

    def __init__(self, directory: Path, min_job_age: int = 300) -> None:
        self.dir = directory
        self.host = socket.gethostname()
        self.conf = directory / "slurm.conf"
        self.jobcomp = directory / "jobcomp.log"
        self.min_job_age = min_job_age

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (sbatch, squeue, ...) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # jobs of other users (the SSH tests) write their output here
        self._write_conf()
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            self._run([daemon, "-f", str(self.conf)])
        self._wait_idle(time.monotonic() + timeout)

    def stop(self) -> None:
        """Cancel every job (a job's slurmstepd outlives slurmd), then SIGTERM every daemon by
        its pid file, SIGKILL what is left after a few seconds."""
        with contextlib.suppress(ClusterError, subprocess.SubprocessError):
            self.cancel_all()
            deadline = time.monotonic() + 15
            while self.command("squeue", "--noheader") and time.monotonic() < deadline:
                time.sleep(0.2)
        pids = [pid for name in DAEMONS if (pid := self._pid(name))]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def controller_stopped(self) -> Iterator[None]:
        """slurmctld frozen (SIGSTOP: a controller too busy to answer) until the block ends."""
        pid = self._pid("slurmctld")
        assert pid is not None, "slurmctld is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart_controller(self, timeout: float = 30.0) -> None:
        """slurmctld stopped (SIGTERM) and started again (its jobs kept in its state files)."""
        pid = self._pid("slurmctld")
        assert pid is not None, "slurmctld is not running"
        os.kill(pid, signal.SIGTERM)
        self._wait_for(lambda: not alive(pid), timeout, "the old slurmctld's end")
        self._run(["slurmctld", "-f", str(self.conf)])
        self._wait_for(self._controller_up, timeout, "slurmctld")

    def _controller_up(self) -> bool:
        return "is UP" in self.command("scontrol", "ping", check=False)

    def cancel_all(self) -> None:
        """scancel every job still queued or running (what a test left behind)."""
        ids = self.command("squeue", "--noheader", "--format=%F").split()
        if ids:
            self.command("scancel", *sorted(set(ids)), check=False)

    def command(self, *argv: str, check: bool = True) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def _write_conf(self) -> None:
        for sub in ("ctld", "d"):
            (self.dir / sub).mkdir(exist_ok=True)
        text = _CONF.format(
            host=self.host,
            dir=self.dir,
            ctld_port=free_port(),
            d_port=free_port(),
            cpus=os.cpu_count() or 1,
            memory=_memory_mb(),
            min_job_age=self.min_job_age,
        )
        self.conf.write_text(text)

    def _start_munge(self) -> None:
        """munged as the `munge` user with its own key and socket in the cluster directory."""
        munge = pwd.getpwnam("munge")
        directory = self.dir / "munge"
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)  # clients of every user talk to the socket in it
        key = directory / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (directory, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        options = [
            f"--socket={directory}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={self.dir}/munged.pid",
            f"--log-file={directory}/munged.log",
            f"--seed-file={directory}/munged.seed",
        ]
        (self.dir / "munged.pid").touch()
        os.chown(self.dir / "munged.pid", munge.pw_uid, munge.pw_gid)
        self._run(["runuser", "-u", "munge", "--", "munged", *options])
        self._wait_for(lambda: (directory / "munge.socket").exists(), 10, "munged")

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self.env)
        if done.returncode != 0:
            raise ClusterError(f"{argv[0]} did not start: {done.stderr.strip() or done.stdout}")

    def _wait_idle(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            state = self.command("sinfo", "-h", "-o", "%T", check=False).strip()
            if state == "idle":
                return
            if state.startswith(("down", "drain")):
                self.command(
                    "scontrol", "update", f"nodename={self.host}", "state=resume", check=False
                )
            time.sleep(0.2)
        raise ClusterError(f"the node did not become idle (last state: {state!r})")

    def _wait_for(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} did not start")
            time.sleep(0.05)

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
