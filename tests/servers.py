"""Real `python run.py` processes, for the tests that need servers of their own: several
processes on one database, or a server's memory as the kernel counts it."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.helpers import eventually

RUN_PY = str(Path(__file__).resolve().parent.parent / "run.py")
SECRET = "a-signing-secret-shared-by-the-test-processes"  # each accepts the tokens any signs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    database_url: str, data_dir: Path, port: int, *, pass_fds: tuple[int, ...] = (), **env: str
) -> subprocess.Popen[bytes]:
    """`run.py` on `port` and `database_url`, with no runner and the YAPTIDE_* settings `env`
    (none from the tests' own environment), inheriting `pass_fds`; its output in
    `server-<port>.log` beside `data_dir`."""
    settings = {k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")}
    settings |= {
        "DATABASE_URL": database_url,
        "YAPTIDE_SERVER_PORT": str(port),
        "YAPTIDE_DATABASE_DATA_DIR": str(data_dir),
        "YAPTIDE_RUNNER_KIND": "none",
        "YAPTIDE_RUNNER_SANDBOX": "off",
        "YAPTIDE_AUTH_SECRET": SECRET,
        **env,
    }
    with (data_dir.parent / f"server-{port}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, RUN_PY], env=settings, stdout=log, stderr=log, pass_fds=pass_fds
        )


async def wait_ready(http: aiohttp.ClientSession, base: str, process: subprocess.Popen) -> None:
    async def up() -> bool:
        assert process.poll() is None, "run.py exited while starting"
        try:
            async with http.get(base + "/") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, timeout=60)


def rss_mib(pid: int) -> float:
    """The resident memory of process `pid` (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")
