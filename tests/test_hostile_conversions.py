"""One hostile signed-in client must not stall the server for everyone: through the editor
project converter that runs at submission (`POST /jobs/direct`, server/jobs/conversion.py), or
through the parse of a large JSON body.

Each test runs a real `run.py` (tests/servers.py), so a conversion left running in the
server's threads is ended with the process (SIGKILL when SIGTERM does not stop it in time)
rather than burning a core of the shared machine for minutes. The bounds are ten times what
the server takes: they catch work that grows with the cube of the input, not slowness."""

import asyncio
import io
import signal
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.editor import logic
from server.limits.budget import parse_cost
from tests.editor_projects import box, project, sphere, world, zone
from tests.servers import free_port, start, wait_ready

PASSWORD = "password1"


@pytest.fixture
async def server(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """(base URL, process) of a run.py with no runner; killed if SIGTERM does not stop it."""
    port = free_port()
    process = start(database_url, tmp_path / "data", port)
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base, process)
        yield base, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


async def signed_in(base: str, username: str) -> aiohttp.ClientSession:
    """A session registered and logged in as `username` (closed by the caller)."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    credentials = {"username": username, "password": PASSWORD}
    async with http.put(f"{base}/auth/register", json=credentials) as response:
        assert response.status == 201, await response.text()
    async with http.post(f"{base}/auth/login", json=credentials) as response:
        assert response.status == 202, await response.text()
    return http


def submission(input_json: dict[str, Any]) -> dict[str, Any]:
    return {"sim_type": "shieldhit", "input_type": "editor", "ntasks": 1, "input_json": input_json}


def figures(count: int) -> list[dict[str, Any]]:
    return [sphere(f"s{i}", radius=1.0 + i * 1e-3) for i in range(count)]


def the_world() -> dict[str, Any]:
    return world(box("w", size=(100.0, 100.0, 100.0)))


def intersection_chain(length: int) -> dict[str, Any]:
    """One zone: the intersection of `length` spheres (a ~0.4 MB body at 2000)."""
    operations = [("union", "s0")] + [("intersection", f"s{i}") for i in range(1, length)]
    return project(figures(length), [zone("z", operations)], the_world())


def outputs_of_one_name(count: int) -> dict[str, Any]:
    """The example geometry with `count` outputs all named "x" (~16 bytes each)."""
    result = project(figures(1), [zone("z", [("union", "s0")])], the_world())
    result["scoringManager"]["outputs"] = [{"name": "x"} for _ in range(count)]
    return result


def unions_spending_the_budget() -> dict[str, Any]:
    """100 zones, each the union of the same 200 spheres (a ~1 MB body): refused once the
    zone algebra's budget (logic.WORK) is spent, as designed, after ~17 s of CPU here."""
    zones = [zone(f"z{j}", *[[("union", f"s{i}")] for i in range(200)]) for j in range(100)]
    return project(figures(200), zones, the_world())


def test_a_distribution_too_large_to_build_is_refused_before_it_is_built() -> None:
    """One zone of 5,000 bodies intersected with 1,000 single ones: 5 million literals, 40 MB
    and more built before the budget refused to reduce them."""
    long_term = tuple(range(1, 5001))
    tracemalloc.start()
    try:
        with pytest.raises(logic.TooComplex, match="builds more than 4000000 literals"):
            logic.intersect([long_term], [(-k,) for k in range(1, 1001)], 200, logic.Budget())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


async def answered_within(
    http: aiohttp.ClientSession, url: str, body: Any, seconds: float, method: str = "POST"
) -> tuple[int, float]:
    """(status, seconds taken) of `method` `url`; fails the test if no answer in `seconds`."""
    began = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            async with http.request(method, url, json=body) as response:
                await response.read()
                return response.status, time.monotonic() - began
    except TimeoutError:
        pytest.fail(f"{method} {url} not answered within {seconds} s")


async def test_a_long_intersection_chain_is_answered_within_seconds(server) -> None:
    """A zone intersecting 2000 figures (a 0.4 MB submission): each step checked the growing
    term for `+k` and `-k` on a tuple, quadratic in its length, while the zone budget was
    charged its length only: ~length**3/3 comparisons (2000: ~80 s, 9999: hours)."""
    base, _ = server
    http = await signed_in(base, "mallory")
    async with http:
        body = submission(intersection_chain(2000))
        status, _ = await answered_within(http, f"{base}/jobs/direct", body, 15)
    assert status == 400  # its world zone needs 2000 zones


async def test_many_outputs_of_one_name_are_answered_within_seconds(server) -> None:
    """20,000 outputs all named "x" (a 0.3 MB submission): each output's file name was made
    unique by counting up from `x_2` past every name taken so far, before any output was
    checked: quadratic (20,000: ~100 s; 100,000: ~40 min of a core). Now its 400 (an output
    without a detector) comes at once."""
    base, _ = server
    http = await signed_in(base, "mallory")
    async with http:
        body = submission(outputs_of_one_name(20_000))
        status, _ = await answered_within(http, f"{base}/jobs/direct", body, 15)
    assert status == 400


async def test_conversions_in_flight_do_not_keep_other_users_from_signing_in(server) -> None:
    """One user submits 8 large editor projects at once, each refused in the end as too
    complex after the seconds of CPU its zone budget allows. Conversions ran on the default
    thread pool (6 threads on 2 cores), where every password hash and check ran too: another
    user's registration waited for all of them. Now conversions have threads of their own,
    one at a time per user, and password checks theirs."""
    base, _ = server
    mallory = await signed_in(base, "mallory")
    body = submission(unions_spending_the_budget())
    async with mallory:
        hostile = [
            asyncio.create_task(mallory.post(f"{base}/jobs/direct", json=body)) for _ in range(8)
        ]
        try:
            await asyncio.sleep(2)  # the bodies are in, the conversions started
            async with aiohttp.ClientSession() as bob:
                credentials = {"username": "bob", "password": PASSWORD}
                status, _ = await answered_within(
                    bob, f"{base}/auth/register", credentials, 10, "PUT"
                )
                assert status == 201
        finally:
            for task in hostile:
                task.cancel()
            await asyncio.gather(*hostile, return_exceptions=True)


def many_keys(count: int) -> bytes:
    """A JSON object of `count` distinct short keys: `{"0":0,"1":0,...}`."""
    return b"{" + b",".join(b'"%d":0' % i for i in range(count)) + b"}"


async def test_a_large_json_body_does_not_stall_every_other_client(server) -> None:
    """A signed-in user's 47 MiB body of 4.15 million distinct keys: within max_body_size and
    the body budget, it was parsed on the event loop, ~3 s during which no other request was
    served, and the user could send the next at once. Bodies whose parse would take more than
    about a second are now refused (413) before it."""
    base, _ = server
    body = many_keys(4_150_000)
    assert len(body) + parse_cost(body) < 512 << 20  # the default body budget
    mallory = await signed_in(base, "mallory")
    async with mallory, aiohttp.ClientSession() as bob:
        headers = {"Content-Type": "application/json"}
        hostile = asyncio.create_task(
            mallory.post(f"{base}/jobs/direct", data=io.BytesIO(body), headers=headers)
        )
        slowest = 0.0
        while not hostile.done():
            began = time.monotonic()
            async with bob.get(f"{base}/") as response:
                assert response.status == 200
                await response.read()
            slowest = max(slowest, time.monotonic() - began)
            await asyncio.sleep(0.05)
        response = await hostile
        message = (
            "Request body too large: more than 1000000 objects, arrays and keys, or 5000000 values"
        )
        assert (response.status, await response.json()) == (413, {"message": message})
    assert slowest < 1.0, f"GET / took {slowest:.1f} s while the body was read"


async def test_sigterm_stops_the_server_while_conversions_run(server) -> None:
    """SIGTERM while one user's projects are being converted: a thread cannot be cancelled
    and the executor was waited for at exit, so the server went on for as long as the
    conversions took (a supervisor then SIGKILLs it, leaving the embedded PostgreSQL
    running). Conversions are now told to stop, and stop at their next step."""
    base, process = server
    mallory = await signed_in(base, "mallory")
    async with mallory:
        body = submission(unions_spending_the_budget())
        hostile = asyncio.create_task(mallory.post(f"{base}/jobs/direct", json=body))
        await asyncio.sleep(3)  # the conversion runs
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        while process.poll() is None and time.monotonic() - began < 20:
            await asyncio.sleep(0.2)
        hostile.cancel()
        await asyncio.gather(hostile, return_exceptions=True)
    assert process.poll() is not None, "run.py still running 20 s after SIGTERM"
