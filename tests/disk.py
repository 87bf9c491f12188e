"""Shared by the tests of disk use (tests/test_disk_*.py): files of a given size, what a
directory holds, whether a path is there."""

import os
from pathlib import Path

KIB = 1024


def big_files(count: int, size: int) -> dict[str, str]:
    """`count` input files of `size` bytes each (random hex, so they do not compress away)."""
    files = {"beam.dat": "NSTAT 100\n"}
    for n in range(count):
        files[f"part{n}.dat"] = os.urandom(size // 2).hex()
    return files


async def gone(path: Path) -> bool:
    return not path.exists()


def disk_usage(directory: Path) -> int:
    """Bytes of the regular files under `directory`, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in directory.rglob("*"):
        info = path.lstat()
        if path.is_file() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


async def exists(path: Path) -> bool:
    return path.exists()
