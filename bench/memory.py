"""Memory under hostile and large request bodies: the peak RSS (VmHWM) of a real server process.

    .venv/bin/python -m bench.memory [--scenario wrong-key-header|wrong-key-body|upload]

Each scenario starts its own `python run.py` (embedded PostgreSQL, a free port, its own data
directory, no runner), makes one simulation through the API, then:

- `wrong-key-header`, `wrong-key-body`: 8 concurrent `POST /tasks` of the largest body a worker
  may send (`server.worker_max_body_size`, gzip-compressed on the wire, valid JSON once inflated)
  with a wrong update key, sent in the `Authorization` header or in the body;
- `upload`: one legitimate `POST /results` of about 240 MiB of result pages (plain JSON).

It prints the server's VmHWM before and after, and the answers' status codes.
"""

import argparse
import asyncio
import contextlib
import gzip
import secrets
import tempfile
import zlib
from pathlib import Path

import aiohttp
import orjson

from bench import db
from bench.server import database, free_port, running, start_server

MIB = 1024 * 1024
BODY_SIZE = 256 * MIB  # the default worker_max_body_size
UPLOAD_SIZE = 240 * MIB
CONCURRENT = 8


def vm_hwm(pid: int) -> int:
    """The peak resident set size of a process, in bytes (VmHWM of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def padded_task_body(job_id: str, key: str | None, size: int) -> bytes:
    """A valid `POST /tasks` JSON body of `size` bytes (a long array of zeros), gzipped."""
    head = {"simulation_id": job_id, "task_id": 1, "update_dict": {"simulated_primaries": 1}}
    if key is not None:
        head["update_key"] = key
    prefix = orjson.dumps(head)[:-1] + b',"pad":['
    count = (size - len(prefix) - 2) // 2
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(prefix)]
    chunk = b"0," * (MIB // 2)
    for _ in range(count // len(chunk) * 2):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(b"0]}"))
    parts.append(compressor.flush())
    return b"".join(parts)


def results_body(job_id: str, key: str, size: int) -> bytes:
    """A `POST /results` body of about `size` bytes: pages of 100,000 floats each."""
    values = [round(i * 0.001, 3) for i in range(100_000)]
    page = orjson.dumps({"data": {"values": values, "unit": "Gy"}})
    pages = [
        {"metadata": {"page_number": n, "name": "dose"}, "data": {"values": values, "unit": "Gy"}}
        for n in range(size // len(page))
    ]
    body = {
        "simulation_id": job_id,
        "update_key": key,
        "estimators": [{"name": "z", "pages": pages}],
    }
    return orjson.dumps(body)


async def make_simulation(base: str, database_url: str) -> tuple[str, str]:
    """Register, log in, submit one simulation; its job_id and a known update key."""
    async with aiohttp.ClientSession(base) as client:
        user = {"username": "memory", "password": "memory-password"}
        await (await client.put("/auth/register", json=user)).read()
        login = await client.post("/auth/login", json=user)
        token = login.cookies["access_token"].value
        submission = {
            "sim_type": "shieldhit",
            "ntasks": 1,
            "input_type": "files",
            "sim_data": {"beam.dat": "NSTAT 100\n"},
        }
        response = await client.post(
            "/jobs/direct", json=submission, headers={"Cookie": f"access_token={token}"}
        )
        job_id = (await response.json())["job_id"]
    key = secrets.token_urlsafe(32)
    await db.set_update_keys(database_url, [job_id], key)
    return job_id, key


async def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> str:
    async with aiohttp.ClientSession(base) as client:
        try:
            async with client.post(path, data=body, headers=headers) as response:
                return f"{response.status} {(await response.read())[:80]!r}"
        except aiohttp.ClientError as exc:
            return f"client error {exc!r}"


async def scenario(name: str, base: str, pid: int, job_id: str, key: str) -> None:
    before = vm_hwm(pid)
    json_type = {"Content-Type": "application/json"}
    if name == "upload":
        body = results_body(job_id, key, UPLOAD_SIZE)
        print(f"upload body: {len(body) / MIB:.0f} MiB")
        answers = [await post(base, "/results", body, json_type)]
    else:
        in_header = name == "wrong-key-header"
        body = padded_task_body(job_id, None if in_header else "wrong-key", BODY_SIZE - 1024)
        headers = {**json_type, "Content-Encoding": "gzip"}
        if in_header:
            headers["Authorization"] = "Bearer wrong-key"
        print(
            f"{CONCURRENT} bodies of {len(body) / 1024:.0f} KiB gzip, each inflating to "
            f"{len(gzip.decompress(body)) / MIB:.0f} MiB"
        )
        jobs = [post(base, "/tasks", body, headers) for _ in range(CONCURRENT)]
        answers = await asyncio.gather(*jobs)
    after = vm_hwm(pid)
    print(f"{name}: VmHWM {before / MIB:.0f} MiB before, {after / MIB:.0f} MiB after")
    for answer in sorted(set(answers)):
        print(f"  {answers.count(answer)} x {answer}")


async def run(name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="yaptide-memory-") as tmp:
        workdir = Path(tmp)
        with database(workdir) as (url, _pgdata):
            port = free_port()
            with running(start_server(url, port, workdir, 1, {})) as server:
                base = f"http://127.0.0.1:{port}"
                await server.wait_ready(base + "/")
                job_id, key = await make_simulation(base, url)
                await scenario(name, base, server.pid, job_id, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    choices = ["wrong-key-header", "wrong-key-body", "upload"]
    parser.add_argument("--scenario", choices=choices, action="append")
    for name in parser.parse_args().scenario or choices:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(name))


if __name__ == "__main__":
    main()
