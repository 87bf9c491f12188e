"""What the server costs, read from /proc: CPU time and memory of a process tree.

CPU is utime + stime + cutime + cstime summed over a root process and its live descendants: a
child that exited and was reaped has its time folded into its parent's cutime/cstime, so nothing
is lost or counted twice. The embedded PostgreSQL is not a child of the server (pg_ctl detaches
it), so it is found by its data directory (`postgres -D <pgdata>`) and accounted separately.
"""

import contextlib
import dataclasses
import itertools
import os
import resource
import threading
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # the process exited meanwhile
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state) of proc(5): utime..cstime are fields 14..17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, from the first line of /proc/stat)."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def parents() -> dict[int, int]:
    """Every live pid and its parent pid."""
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                table[int(entry.name)] = int(fields[1])
    return table


def tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int | None) -> float:
    """CPU seconds used so far by `root` and its descendants (0 when there is no root)."""
    return sum(cpu_seconds(pid) for pid in tree(root)) if root else 0.0


def memory_kib(pid: int, field: str) -> int:
    """A `Vm*` line of /proc/<pid>/status (VmRSS now, VmHWM the peak), in KiB."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def total_mib(pids: Iterable[int], field: str = "VmRSS") -> float:
    return sum(memory_kib(pid, field) for pid in pids) * 1024 / MIB


def find_postmaster(pgdata: Path) -> int | None:
    """The pid of the postgres started on `pgdata` (its command line has `-D <pgdata>`)."""
    wanted = str(pgdata)
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for flag, value in itertools.pairwise(args):
            if flag == b"-D" and value.decode(errors="replace") == wanted:
                return int(entry.name)
    return None


def listening_pids(port: int, pids: Iterable[int]) -> set[int]:
    """Which of `pids` hold a TCP socket listening on `port` (SO_REUSEPORT workers each do)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return {pid for pid in pids if inodes.intersection(_fd_links(pid))}


def _fd_links(pid: int) -> set[str]:
    """What the open files of `pid` point at (fds closed while reading are skipped)."""
    links = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return links
    for fd in fds:
        with contextlib.suppress(OSError):
            links.add(os.readlink(fd))
    return links


class RssSampler:
    """Samples the summed VmRSS of a fixed set of pids every `interval` s from a thread."""

    def __init__(self, pids: Iterable[int], interval: float = 0.05) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.before = total_mib(self.pids)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, total_mib(self.pids))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = total_mib(self.pids)
        self.peak = max(self.peak, self.after)


@dataclasses.dataclass(frozen=True)
class Usage:
    """CPU seconds used so far: by the server tree, by postgres, by our reaped children (wrk),
    and by the whole machine. Subtract two readings for what happened in between."""

    server: float
    postgres: float
    client: float
    machine: float

    @classmethod
    def now(cls, server_pid: int, postgres_pid: int | None) -> "Usage":
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            server=tree_cpu_seconds(server_pid),
            postgres=tree_cpu_seconds(postgres_pid),
            client=children.ru_utime + children.ru_stime,
            machine=busy_seconds(),
        )

    def __sub__(self, earlier: "Usage") -> "Usage":
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(earlier), strict=True)
        return Usage(*(now - then for now, then in pairs))

    @property
    def others(self) -> float:
        """The machine's busy time not spent by the server, postgres or wrk (other users)."""
        return max(self.machine - self.server - self.postgres - self.client, 0.0)
