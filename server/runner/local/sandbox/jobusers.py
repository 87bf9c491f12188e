"""The users of jobs, as a server run as root runs its tasks: one per job, of a range no account
of the host has, and what such a user needs to reach in its sandbox (for lines.py and probe.py).

A task so run reads only what any account may, and no other process of the host, nor another
job's, shares its user (its /proc entries, its keyring). The directories the sandbox shows it
(this project, the Python running it, the simulators) must be readable by any account; one
above them that such a user may not enter (a Python under /root, 0700) is covered by an empty
directory holding just the way to them.
"""

import hashlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Users (and groups) of jobs when this server runs as root: 2^20 numbers from 0x7F000000, clear
# of the usual ranges (accounts, systemd's dynamic users and containers, the foreign range).
JOB_ACCOUNTS, JOB_ACCOUNT_BITS = 0x7F000000, 20


def job_account(job_dir: Path) -> int:
    """The user and group number of the job in `job_dir`, as root runs it: from its name (two
    jobs share one by a chance of one in a million)."""
    digest = hashlib.sha256(job_dir.name.encode()).digest()
    return JOB_ACCOUNTS + int.from_bytes(digest[:4], "big") % (1 << JOB_ACCOUNT_BITS)


def reachable(path: Path, account: int) -> bool:
    """Whether `account` may search the directory `path` (as its owner, group or another)."""
    found = path.stat()
    shift = 6 if found.st_uid == account else 3 if found.st_gid == account else 0
    return bool(found.st_mode & (stat.S_IXOTH << shift))


def covers(paths: list[Path], account: int) -> list[Path]:
    """For `account` to reach `paths`, the first directory in each one's way that it may not
    search: each gets an empty one over it. (The ways in /tmp, the sandbox's own, it makes.)"""
    found: list[Path] = []
    for path in paths:
        for parent in reversed(path.parents):
            if parent.is_relative_to("/tmp"):
                break
            if parent != Path("/") and not reachable(parent, account):
                found.append(parent)
                break
    return list(dict.fromkeys(found))


def way_to(path: Path) -> Iterator[str]:
    """The directories above `path`, made searchable where the sandbox makes them (in /tmp, in
    a cover; bwrap's own are root's only); those of the host are left as they are."""
    for parent in reversed(path.parents):
        if parent != Path("/"):
            yield from ("--perms", "0755", "--dir", str(parent))


def warn_closed(directories: list[Path]) -> None:
    """Said at the start: the directories shown to tasks that their jobs' users may not enter
    (the ways to them are made; the directories are as they are), whose programs cannot run."""
    for directory in directories:
        if not reachable(directory, JOB_ACCOUNTS):
            log.warning(
                "tasks run as users of their jobs, who may not enter %s (mode %o): a program "
                'there cannot run (README, "The workers\' sandbox")',
                directory,
                stat.S_IMODE(directory.stat().st_mode),
            )
