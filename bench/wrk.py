"""Load generation with wrk, a separate C process: command lines, Lua scripts, output parsing.

Each workload script (bench/lua/<kind>.lua) is joined with bench/lua/common.lua, whose `done()`
prints one `BENCH_JSON {...}` line with the request count, errors and latency percentiles, so
nothing depends on the layout of wrk's human-readable summary.
"""

import asyncio
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import orjson

LUA = Path(__file__).resolve().parent / "lua"
MARKER = "BENCH_JSON "
TIMEOUT = "10s"  # wrk's default (2 s) would count slow responses as errors, not as latency


class WrkError(Exception):
    """wrk could not be installed, did not run, or printed no result line."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    non_2xx: int  # wrk counts responses with status >= 400 (it sends no If-None-Match: no 304s)
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "rps": self.rps}


def ensure_wrk() -> str:
    """The path of wrk, installed from the Debian package first when it is missing."""
    if found := shutil.which("wrk"):
        return found
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode != 0:
            raise WrkError(f"cannot install wrk with apt-get: {done.stderr.strip()[-500:]}")
    if found := shutil.which("wrk"):
        return found
    raise WrkError("apt-get installed wrk but it is not on PATH")


def write_script(kind: str, directory: Path) -> Path:
    """bench/lua/<kind>.lua followed by common.lua, written to `directory`."""
    path = directory / f"{kind}.lua"
    path.write_text((LUA / f"{kind}.lua").read_text() + "\n" + (LUA / "common.lua").read_text())
    return path


def command(
    wrk: str, base_url: str, *, connections: int, duration: int, script: Path, args: list[str]
) -> list[str]:
    """c=1 runs one thread; more connections are spread over two threads (one per core). No
    secret goes on it (any account sees a command line): see environment()."""
    threads = 1 if connections == 1 else 2
    line = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={TIMEOUT}"]
    return [*line, "-s", str(script), base_url, "--", *args]


def environment(headers: dict[str, str], key: str = "") -> dict[str, str]:
    """wrk's environment: this one's, plus the headers of every request (common.lua reads
    BENCH_HEADERS: one is the access cookie) and the update key of tasks.lua, which a command
    line would show to every account of the host."""
    lines = "\n".join(f"{name}: {value}" for name, value in headers.items())
    return {**os.environ, "BENCH_HEADERS": lines, "BENCH_UPDATE_KEY": key}


def parse(stdout: str) -> WrkResult:
    """The result line printed by common.lua's done()."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = orjson.loads(line[len(MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no result line: {stdout.strip()[-500:]!r}")
    errors, latency = data["errors"], data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        **{f"{name}_ms": latency[name] / 1000 for name in ("p50", "p90", "p99", "max", "mean")},
    )


async def run(line: list[str], duration: int, env: dict[str, str]) -> WrkResult:
    """Run one wrk command line in `env` (environment()) and parse its result (WrkError when
    it fails)."""
    process = await asyncio.create_subprocess_exec(
        *line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), duration + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise WrkError(f"wrk did not finish within {duration + 60} s") from None
    if process.returncode != 0:
        raise WrkError(f"wrk exited with {process.returncode}: {stderr.decode().strip()[-500:]}")
    return parse(stdout.decode())
