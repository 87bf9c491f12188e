"""Body files: the large gzip bodies of finished simulations kept on disk, so that fetching one
again reads no page from the database and splices nothing.

A `GET /results` body of a finished simulation (its pages can no longer change) that is
streamed (over render.SINGLE_WRITE bytes) and sent gzip is written to
`<data_dir>/body-files/<job_id>.<digest of its body key>.gz` in the background: when the
simulation finishes through a worker's request to this process, and when such a body is fetched
and has no file yet. A body key names the page versions the body is made of, so a file is never
stale; a file is sent only after the request's checks (owner, not deleted), and only when its
size is the body's exact length. Every process of a server shares the directory: a file is
written under a temporary name, synced and renamed, so a reader finds a whole file or none, and
a file removed while it is being sent stays readable to its reader.

The directory is kept under `server.disk_cache_size` bytes by removing the least recently used
files (sending a file renews its time) and the files being written that an ended process left,
before a file is written (room for it) and after; a body of more than a quarter of it gets no
file. (Processes writing at once each make room for their own file only: together they may pass
the budget by what they are writing, at most a quarter of it each.) A
deleted simulation's files are removed by every process when the deletion is notified
(server/results/caches/changes.py), before its `DELETE` returns, and none is written for it after; a
process that was not listening then (stopped, or its connection down) removes them when it
listens again.
"""

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Callable, Hashable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

DIRECTORY = "body-files"  # in the data directory
SUFFIX = ".gz"
PART = ".part"  # a file being written, named `<name>.<pid>.part`
CHUNK = 1 << 20  # bytes read or written at a time
STALE_PART = 3600.0  # seconds after which a file being written was left by a process that ended
RENEW = 60.0  # seconds after which sending a file sets its time again
SPARE_BUFFERS = 4  # read buffers kept for the next fetches
CLOSE_WAIT = 30.0  # seconds a stopping server waits for the files it is writing
MAX_DELETED = 100_000  # deleted job_ids remembered (~10 MB at most)
SAFE_NAME = re.compile(r"[0-9A-Za-z_-]+\Z")  # job_ids this names files for (server-made: all)

Pieces = AsyncGenerator[bytes, None]


class BodyFiles:
    """The body files of one directory, as one server process sees them."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._path = str(directory)  # for open: a pathlib join was 1 % of a fetch's time
        self._writing: dict[str, asyncio.Task[None]] = {}
        self._one_at_a_time = asyncio.Semaphore(1)  # one body read from the database at a time
        self._spare: list[bytearray] = []  # read buffers no transport holds (see read)
        # Deleted simulations (job_ids are never used again): a file about to be written for
        # one (its index read just before the delete) is not (forget).
        self._deleted: set[str] = set()

    def keeps(self, size: int) -> bool:
        """Whether a body of about `size` bytes gets a file."""
        return 0 < size * 4 <= self.max_bytes

    def name(self, job_id: str, key: Hashable) -> str | None:
        """The file name of the body `key` of `job_id` (None: a job_id that names no file)."""
        if not SAFE_NAME.match(job_id):
            return None
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return f"{job_id}.{digest}{SUFFIX}"

    def open(self, name: str, length: int) -> io.FileIO | None:
        """The file `name`, open, if it holds the `length` bytes of its body; its use renewed
        (its time set, once RENEW seconds old: a finer order would not change what eviction
        removes, and setting it at every fetch was 1 % of a 2.6 MB body's, py-spy)."""
        path = os.path.join(self._path, name)
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 (read() closes)
        except OSError:
            return None
        stat = os.fstat(file.fileno())
        if stat.st_size != length:
            file.close()
            return None
        if time.time() - stat.st_mtime >= RENEW:
            with contextlib.suppress(OSError):
                os.utime(file.fileno())
        return file

    async def read(
        self, file: io.FileIO, pending: Callable[[], int]
    ) -> AsyncGenerator[memoryview, None]:
        """The bytes of an open body file, CHUNK at a time (from the page cache, mostly);
        closes it. Each piece must be written before the next is asked for; `pending()` is how
        many bytes written the transport still holds. A buffer is read into again only when
        nothing written is pending (uvloop's transport keeps a reference to what it has not
        sent), else a new one is taken: fresh memory for each piece cost page faults, a fifth
        of a 2.6 MB fetch's time. (Pieces of 64 KiB doubling up to CHUNK, as pages are sent,
        were no faster to the first byte here, and slower.)"""
        buffer = self._spare.pop() if self._spare else bytearray(CHUNK)
        with file:
            while count := file.readinto(buffer):
                yield memoryview(buffer)[:count]
                if pending():
                    buffer = bytearray(CHUNK)
        if not pending() and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(buffer)

    def write_soon(self, name: str, length: int, pieces: Callable[[], Pieces]) -> None:
        """Write the file `name` of `length` bytes from `pieces()` in the background, unless it
        is being written or its simulation was deleted."""
        if name in self._writing or name.partition(".")[0] in self._deleted:
            return
        task = asyncio.get_running_loop().create_task(self._write(name, length, pieces))
        self._writing[name] = task
        task.add_done_callback(lambda _: self._writing.pop(name, None))

    async def _write(self, name: str, length: int, pieces: Callable[[], Pieces]) -> None:
        async with self._one_at_a_time:
            path = self.directory / name
            if path.exists():
                return
            part = path.with_name(f"{name}.{os.getpid()}{PART}")
            try:
                await asyncio.to_thread(self.evict, length)  # room first: never over budget
                written = await _fill(part, pieces())
                if written != length:  # (pages that change raise PagesChanged: never expected)
                    raise ValueError(f"{written} bytes of {length}")
                os.replace(part, path)  # on the event loop: forget() sees the file or no task
            except Exception as exc:  # the database, the disk: the body is sent from pages
                log.warning("body file %s not written (%s: %s)", name, type(exc).__name__, exc)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
        await asyncio.to_thread(self.evict)

    def forget(self, job_id: str) -> None:
        """Remove the files of `job_id` (deleted), stop writing any, and write none later."""
        if not SAFE_NAME.match(job_id):
            return
        if len(self._deleted) >= MAX_DELETED:
            self._deleted.clear()
        self._deleted.add(job_id)
        for name, task in list(self._writing.items()):
            if name.startswith(f"{job_id}."):
                task.cancel()
        # Files being written too: one a killed process left has no task to stop.
        for pattern in (f"{job_id}.*{SUFFIX}", f"{job_id}.*{SUFFIX}.*{PART}"):
            for path in self.directory.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def job_ids(self) -> list[str]:
        """The simulations that have files (blocking: a directory listing)."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as entries:
            names = [entry.name for entry in entries if entry.name.endswith(SUFFIX)]
            return sorted({name.partition(".")[0] for name in names})
        return []

    def evict(self, room: int = 0) -> None:
        """Remove the least recently used files until the directory holds at most max_bytes
        less `room` (for a file about to be written), and the files being written that an
        ended process left behind."""
        found, total = [], 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    total += stat.st_size
                    if entry.name.endswith(SUFFIX):
                        found.append((stat.st_mtime, stat.st_size, entry.path))
                    elif entry.name.endswith(PART) and _left_behind(entry.name, stat.st_mtime):
                        os.unlink(entry.path)
        for _, size, path in sorted(found):
            if total + room <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size

    def start(self) -> None:
        """Make the directory, and bring it within the budget (which may have shrunk)."""
        if self.max_bytes > 0:  # users' results: no other account of the host reads them
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.chmod(0o700)  # also one made before this was so
            self.evict()

    async def close(self) -> None:
        """Let the files being written finish (for CLOSE_WAIT seconds at most)."""
        writing = list(self._writing.values())
        if writing:
            _, late = await asyncio.wait(writing, timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _left_behind(name: str, modified: float) -> bool:
    """Whether the file being written `name` (`<name>.<pid>.part`) was left by a process that
    ended: its process is gone, or it was last written STALE_PART seconds ago."""
    pid = name.removesuffix(PART).rpartition(".")[2]
    if modified < time.time() - STALE_PART or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # another account's process
        pass
    return False


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


async def _fill(part: Path, pieces: Pieces) -> int:
    """Write `pieces` to the new file `part` (off the event loop), synced; the bytes written."""
    file = await asyncio.to_thread(open, part, "xb", opener=_private)
    written, buffer = 0, bytearray()
    try:
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                buffer += piece
                if len(buffer) >= CHUNK:
                    written += await asyncio.to_thread(file.write, buffer)
                    buffer = bytearray()
        return written + await asyncio.to_thread(_finish, file, buffer)
    finally:
        file.close()


def _finish(file: BinaryIO, last: bytearray) -> int:
    written = file.write(last)
    os.fsync(file.fileno())
    return written
