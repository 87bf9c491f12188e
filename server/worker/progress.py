"""Progress of a running simulator, parsed from what it prints, and its reports to the server.

SHIELD-HIT12A prints `Primary particle no. N  ETR: h hours m minutes s seconds` on its standard
output; FLUKA writes, in `fluka_<pid>/<input>001.out`, a table whose rows hold the primaries
handled so far, the primaries left and the average time per primary. The reporter sends the
latest values with `POST /tasks` at most once per interval, and only when they changed. A report
the server could not take (it stayed unreachable for `retry_timeout`) is dropped: the next one
supersedes it, and the simulator goes on (only the job's end, a 409, stops it).
"""

import asyncio
import logging
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from server.worker.client import ServerClient, Unreachable

log = logging.getLogger(__name__)

_COUNT = r"([0-9]{1,19})"  # ASCII, and few enough digits for int() (it refuses over 4,300)
SHIELDHIT_PRIMARY = re.compile(
    rf"Primary particle no.\s+{_COUNT}\s+ETR:\s*{_COUNT}\s+hours?\s+{_COUNT}\s+minutes?"
    rf"\s+{_COUNT}\s+seconds?"
)
FLUKA_TABLE_MARKS = ("NUMBER OF BEAM", "NEXT SEEDS:")
FLUKA_OUT_GLOB = "fluka_*/*001.out"
TAIL_BYTES = 64 * 1024
MAX_ESTIMATE = 2**31 - 1  # seconds: the most a task's estimated_time can hold (an int32)
MAX_PRIMARIES = 2**63 - 1  # the most a task's simulated_primaries can hold (a bigint)
MAX_PARTIAL = 64 * 1024  # of a FLUKA .out line not ended yet, only the end is kept
READ_AT_MOST = 4 * 1024 * 1024  # of the FLUKA .out file per look at it


@dataclass
class Progress:
    simulated: int = 0
    estimated_time: int | None = None
    version: int = 0  # bumped on every change, so the reporter sends only news

    def set(self, simulated: int, estimated_time: int | None) -> None:
        """Past these bounds the server refuses the report (400), which stops the simulator."""
        simulated = max(min(simulated, MAX_PRIMARIES), 0)
        if estimated_time is not None:
            estimated_time = max(min(estimated_time, MAX_ESTIMATE), 0)
        if (simulated, estimated_time) != (self.simulated, self.estimated_time):
            self.simulated, self.estimated_time = simulated, estimated_time
            self.version += 1


class Tail:
    """The last TAIL_BYTES of a stream of lines (for the log files)."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._size = 0

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        while self._size > TAIL_BYTES and len(self._lines) > 1:
            self._size -= len(self._lines.popleft())

    def text(self) -> str:
        return "".join(self._lines)[-TAIL_BYTES:]


def read_shieldhit_line(progress: Progress, line: str) -> None:
    match = SHIELDHIT_PRIMARY.search(line)
    if match:
        done, hours, minutes, seconds = map(int, match.groups())
        progress.set(done, hours * 3600 + minutes * 60 + seconds)


class FlukaOutParser:
    """Rows of six numbers after FLUKA's progress table header: done, left, ..., s/primary."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._in_table = False

    def feed(self, line: str) -> None:
        if any(mark in line for mark in FLUKA_TABLE_MARKS):
            self._in_table = True
            return
        fields = line.split()
        if not self._in_table or len(fields) != 6:
            return
        try:
            done, left = int(fields[0]), int(fields[1])
            estimate = round(left * float(fields[3]))
        except (ValueError, OverflowError):  # not numbers, or a time per primary of NaN or inf
            return
        self._progress.set(done, estimate)


async def follow_fluka_out(directory: Path, progress: Progress, period: float) -> None:
    """Read the FLUKA .out file as it grows (cancelled when the simulator has ended)."""
    parser = FlukaOutParser(progress)
    path, offset, partial, behind = None, 0, "", False
    while True:
        if not behind:  # else more was written than one read takes: read on at once
            await asyncio.sleep(period)
        if path is None:
            path = next(iter(sorted(directory.glob(FLUKA_OUT_GLOB))), None)
            if path is None:
                continue
        try:
            chunk, read_to = await asyncio.to_thread(_read_from, path, offset)
        except OSError:  # rfluka removes its directory at the end
            return
        behind, offset = read_to - offset == READ_AT_MOST, read_to
        lines = (partial + chunk).split("\n")
        partial = lines.pop()[-MAX_PARTIAL:]  # no progress row is that long: memory stays flat
        for line in lines:
            parser.feed(line)


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    """What the file holds past `offset`, READ_AT_MOST bytes of it at a time."""
    with path.open("rb") as source:
        source.seek(offset)
        data = source.read(READ_AT_MOST)
    return data.decode(errors="replace"), offset + len(data)


async def report(client: ServerClient, progress: Progress, interval: float) -> None:
    """Send the progress every `interval` seconds while it changes (runs until cancelled)."""
    sent = progress.version
    while True:
        await asyncio.sleep(interval)
        if progress.version == sent:
            continue
        sent = progress.version
        update = {"simulated_primaries": progress.simulated}
        if progress.estimated_time is not None:
            update["estimated_time"] = progress.estimated_time
        try:
            await client.update_task(**update)
        except Unreachable as exc:
            log.warning("progress not reported, the simulator goes on: %s", exc)
