"""`GET /inputs` and `GET /logfiles` (large ones too), and another user's simulation on every user
endpoint."""

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import socket
import tracemalloc

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.editor import convert
from server.store.logfiles import PART
from tests.helpers import (
    EDITOR,
    FLUKA_FILES,
    SHIELDHIT_FILES,
    add_logfiles,
    add_results_and_logs,
    login,
    payload,
    set_key,
    set_simulation,
    stored_counts,
    submit,
    switch_user,
)
from tests.test_results_large import read_rest, slow_socket


async def get(client, path: str) -> tuple[int, dict]:
    response = await client.get(path)
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("name", "input_type", "key"),
    [
        (EDITOR, "editor", "input_json"),
        (SHIELDHIT_FILES, "files", "input_files"),
        (FLUKA_FILES, "files", "input_files"),
    ],
)
async def test_inputs_as_submitted(client, conn, name, input_type, key):
    await login(client)
    job_id = await submit(client, name)
    response = await client.get(f"/inputs?job_id={job_id}")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = orjson.loads(await response.read())
    submitted = payload(name)[key]
    expected = {"message": "Inputs", "input_type": input_type, "input": submitted}
    if input_type == "editor":  # 10000 primaries over 4 tasks: the files say NSTAT 2500
        expected["input_files"] = convert(submitted, 2500)
        assert "\nNSTAT       2500 0 " in body["input_files"]["beam.dat"]
    assert body == expected
    assert list(body["input"]) == list(submitted)  # key order too


async def test_inputs_sent_as_sim_data(client, conn):
    await login(client)
    files = {"beam.dat": "NSTAT 1000\n", "geo.dat": '\u00c5ngstr\u00f6m \\ "quoted"\n'}
    job_id = await submit(client, FLUKA_FILES, input_files=None, sim_data=files)
    assert await get(client, f"/inputs?job_id={job_id}") == (
        200,
        {"message": "Inputs", "input_type": "files", "input": files},
    )


async def test_logfiles(client, conn):
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        404,
        {"message": "Logfiles not available"},
    )
    logs = {"simulation.log": "line 1\nline 2\n", "fluka_0001.out": "\u00b5s \u2713", "e": ""}
    await set_key(conn, job_id)
    await add_logfiles(client, job_id, logs)
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": logs},
    )


async def test_an_http_1_0_client_gets_the_logfiles_ended_by_a_close(client, conn):
    """HTTP/1.0 has no chunks: an answer of no stated length ends when the connection closes.
    A client asking to keep it alive waited the keep-alive timeout (75 s) for that end."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    await add_logfiles(client, job_id, {"a.log": "line 1\n"})
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"]
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"GET /logfiles?job_id={job_id} HTTP/1.0\r\nConnection: keep-alive\r\n"
        f"Cookie: access_token={cookie.value}\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), 5)  # to the connection's end
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and b"Content-Length" not in head
    assert orjson.loads(body) == {"message": "Logfiles", "logfiles": {"a.log": "line 1\n"}}


async def test_many_large_logfiles_are_sent_without_holding_them_all(client, conn):
    """A simulation of 1000 tasks may hold hundreds of MB of logs (64 KiB tails of each task's
    outputs, or what external workers send): they were read and encoded whole for each
    GET /logfiles, several times their size at once for every concurrent request."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    logs = {f"task_{n:03}_stdout": f"line {n} \u00b5s\n" * 4000 for n in range(300)}  # 23 MB
    await set_key(conn, job_id)
    names = list(logs)
    for start in range(0, len(names), 10):  # bodies under 1 MiB
        await add_logfiles(client, job_id, {name: logs[name] for name in names[start : start + 10]})
    expected = hashlib.sha256(orjson.dumps({"message": "Logfiles", "logfiles": logs})).digest()
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with client.get(f"/logfiles?job_id={job_id}") as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200 and digest.digest() == expected
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB to send 23 MB of logs"


@pytest.mark.parametrize("path", ["/inputs", "/logfiles"])
async def test_missing_and_unknown_job(client, conn, path):
    await login(client)
    assert await get(client, path) == (400, {"message": "Missing job_id"})
    assert await get(client, f"{path}?job_id=") == (400, {"message": "Missing job_id"})
    assert await get(client, f"{path}?job_id=nope") == (404, {"message": "Simulation not found"})


@pytest.mark.parametrize("path", ["/inputs", "/logfiles"])
async def test_needs_login(client, path):
    assert await get(client, f"{path}?job_id=x") == (401, {"message": "No token provided"})


async def test_another_users_simulation_on_every_endpoint(client, conn):
    """Bob gets 403 and nothing of Alice's simulation; nothing of it changes."""
    await login(client)
    job_id = await submit(client, EDITOR)
    await add_results_and_logs(client, conn, job_id)
    await set_simulation(conn, job_id, job_state="COMPLETED")
    before = await stored_counts(conn, job_id)
    await switch_user(client, "bob")
    forbidden = (403, {"message": "Simulation belongs to another user"})
    assert await get(client, f"/inputs?job_id={job_id}") == forbidden
    assert await get(client, f"/logfiles?job_id={job_id}") == forbidden
    response = await client.delete(f"/user/simulations?job_id={job_id}")
    assert (response.status, await response.json()) == forbidden
    assert await get(client, "/user/simulations") == (
        200,
        {"message": "User simulations", "simulations": [], "page_count": 0, "simulations_count": 0},
    )
    assert await stored_counts(conn, job_id) == before
    await switch_user(client, "alice")
    assert (await get(client, f"/logfiles?job_id={job_id}"))[0] == 200
    assert (await get(client, f"/inputs?job_id={job_id}"))[0] == 200


MIB = 1 << 20


async def test_one_large_log_file_is_sent_a_few_mb_at_a_time(client, conn):
    """A worker may store one log of up to worker_max_body_size (256 MiB). It is read whole,
    and was encoded whole with orjson.dumps, which reserves a worst-case buffer of about ten
    times the text: a 20 MB log took ~290 MiB for one GET. It is encoded a piece at a time."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    text = "  step 12345 of 100000: 1.234e-05 s\n" * 550_000  # 20 MB, one file
    await add_logfiles(client, job_id, {"task_1_stdout": text})
    expected = orjson.dumps({"message": "Logfiles", "logfiles": {"task_1_stdout": text}})
    expected_digest, expected_length = hashlib.sha256(expected).digest(), len(expected)
    del text, expected
    digest, received = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        async with client.get(f"/logfiles?job_id={job_id}") as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                digest.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200
    assert (received, digest.digest()) == (expected_length, expected_digest)
    assert peak < 48 * MIB, f"{peak / MIB:.0f} MiB to send one log of 20 MB"


async def test_a_client_that_reads_logfiles_too_slowly_is_cut_off(
    aiohttp_client, make_config, conn
):
    """`GET /logfiles` is written under the same rule as a streamed `GET /results` body
    (README): a piece that waits `server.body_timeout` seconds for its client drops the
    connection. It was written with a plain `response.write`, which waits for a trickling
    client for ever (TCP's own timeout never fires: what it takes is acknowledged)."""
    client = await aiohttp_client(create_app(make_config(server={"body_timeout": 1.0})))
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    logs = {f"task_{n}_stdout": f"line {n}\n" * 120_000 for n in range(1, 9)}  # 8 x ~1 MB
    await add_logfiles(client, job_id, logs)
    length = len(orjson.dumps({"message": "Logfiles", "logfiles": logs}))  # 7.7 MB
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    request = (
        f"GET /logfiles?job_id={job_id} HTTP/1.1\r\nHost: x\r\n"
        f"Cookie: access_token={cookie}\r\n\r\n"
    ).encode()
    data = bytearray()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.server.host, client.server.port))
    sock.sendall(request)
    sock.settimeout(5)
    with sock, contextlib.suppress(ConnectionResetError, TimeoutError):
        for _ in range(40):  # 4 KiB every 0.1 s for 4 s
            if not (chunk := await asyncio.to_thread(sock.recv, 4096)):
                break
            data += chunk
            await asyncio.sleep(0.1)
        while chunk := await asyncio.to_thread(sock.recv, 1 << 20):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    # The whole body (chunked: its last chunk ends the JSON, then the empty chunk) was sent.
    complete = data.endswith(b"}}\r\n0\r\n\r\n") and len(data) > length
    assert not complete, f"all {length} bytes of the body were sent to a client taking 40 KiB/s"


@pytest.mark.parametrize("path", ["/inputs", "/ui/inputs"])
async def test_idle_keep_alive_connections_do_not_hold_their_last_answer(client, conn, path):
    """aiohttp keeps a keep-alive connection's last response until its next request: each of
    8 idle connections that fetched a 4 MB input held it (~32 MB) until they closed (one of
    1.6 MB, sent in one piece, here)."""
    await login(client)
    files = {"big.inp": ("x" * 79 + "\n") * (1_600_000 // 80)}
    body = orjson.dumps(payload(FLUKA_FILES, input_files=files))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=io.BytesIO(body), headers=headers)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    cookie = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
    request = f"GET {path}?job_id={job_id} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
    tracemalloc.start()
    try:
        idle = []
        for _ in range(8):
            reader, writer = await asyncio.open_connection(client.host, client.port)
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)  # read and dropped; the connection stays open
            idle.append(writer)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for writer in idle:
            writer.close()
    assert held < 3 * MIB, f"{held / MIB:.1f} MiB"


async def test_ui_inputs_of_a_large_input_are_not_encoded_again(client, conn):
    """`GET /inputs` splices the stored JSON (~3x the input at peak); `/ui/inputs` parsed it
    and encoded it again, whose worst-case buffer for each large string made a 43 MB files
    input cost ~600 MiB per request (14x). It splices it too."""
    await login(client)
    files = {f"f{n}.inp": ("x" * 79 + "\n") * (4_000_000 // 80) for n in range(5)}  # 20 MB
    body = orjson.dumps(payload(FLUKA_FILES, input_files=files))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=io.BytesIO(body), headers=headers)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    size = sum(len(text) for text in files.values())
    peaks = {}
    for path in ("/inputs", "/ui/inputs"):
        tracemalloc.start()
        try:
            digest = hashlib.sha256()
            async with client.get(f"{path}?job_id={job_id}") as response:
                async for chunk in response.content.iter_chunked(1 << 16):
                    digest.update(chunk)
            _, peaks[path] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status == 200
    assert peaks["/ui/inputs"] < 4 * size, {p: f"{v / MIB:.0f} MiB" for p, v in peaks.items()}


@pytest.mark.parametrize("path", ["/inputs", "/ui/inputs"])
async def test_a_client_that_never_reads_its_inputs_is_let_go(
    aiohttp_client, make_config, conn, path
):
    """An input (up to `server.max_body_size`) is handed to the connection whole: one that
    never reads held it for ever (~2x its size). The kernel drops the connection once it stays
    unacknowledged for `server.body_timeout` seconds, as for results sent whole."""
    client = await aiohttp_client(create_app(make_config(server={"body_timeout": 1.0})))
    await login(client)
    files = {"big.inp": ("x" * 79 + "\n") * (2_000_000 // 80)}
    body = io.BytesIO(orjson.dumps(payload(FLUKA_FILES, input_files=files)))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=body, headers=headers)
    job_id = (await response.json())["job_id"]
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    request = (
        f"GET {path}?job_id={job_id} HTTP/1.1\r\nHost: x\r\nCookie: access_token={cookie}\r\n\r\n"
    )
    with slow_socket(client, request.encode()) as sock:
        await asyncio.sleep(6)  # not reading
        received = await read_rest(sock)
    assert received < 2_000_000, f"all {received} bytes were sent"


async def test_a_log_file_is_stored_in_parts_and_read_back_whole(client, conn):
    """Parts of 1 Mi characters (migration 0017), cut between characters (a 4-byte one too)."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    text = "\U0001f600" + "x" * PART + "\u00e9" * (PART + 2)  # 3 parts
    await add_logfiles(client, job_id, {"big": text, "small": ""})
    rows = await conn.fetch("SELECT name, part, length(content) AS n FROM logfiles ORDER BY 1, 2")
    assert [tuple(row) for row in rows] == [
        ("big", 0, PART),
        ("big", 1, PART),
        ("big", 2, 3),
        ("small", 0, 0),
    ]
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": {"big": text, "small": ""}},
    )
    await add_logfiles(client, job_id, {"big": "short now"})  # its other parts go with it
    assert await conn.fetchval("SELECT count(*) FROM logfiles WHERE name = 'big'") == 1
    assert (await get(client, f"/logfiles?job_id={job_id}"))[1]["logfiles"]["big"] == "short now"


async def test_a_log_file_replaced_while_it_is_sent_cuts_the_connection(client, conn):
    """A file read in several batches and replaced between two of them: the connection is cut
    (the body incomplete, as a result's whose pages change), never a text made of both."""
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    await add_logfiles(client, job_id, {"big": "a" * (24 * PART)})  # 24 MiB: six batches
    async with client.get(f"/logfiles?job_id={job_id}") as response:
        assert response.status == 200
        first = await response.content.readexactly(1 << 20)  # the first batch is being written
        await add_logfiles(client, job_id, {"big": "b" * (24 * PART)})
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert first.startswith(b'{"message":"Logfiles","logfiles":{"big":"aaa')


async def large_input(client, random: bool = True) -> tuple[str, dict[str, str]]:
    """A files simulation of 24 MB of text that compresses little (~18 MB stored: read from
    the database a slice at a time), or that compresses well (~0.1 MB stored, read whole but
    too large to inflate whole): streamed either way."""
    if random:
        files = {f"f{n}.inp": base64.b64encode(os.urandom(6_000_000)).decode() for n in range(3)}
    else:
        files = {f"f{n}.inp": "0123456789abcdef" * 500_000 for n in range(3)}
    body = orjson.dumps(payload(FLUKA_FILES, input_files=files))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=io.BytesIO(body), headers=headers)
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"], files


@pytest.mark.parametrize("random", [True, False], ids=["stored-large", "inflates-large"])
@pytest.mark.parametrize("path", ["/inputs", "/ui/inputs"])
async def test_a_large_input_is_streamed_whole(client, conn, path, random):
    await login(client)
    job_id, files = await large_input(client, random)
    async with client.get(f"{path}?job_id={job_id}") as response:
        assert "Content-Length" not in response.headers  # chunked: made as it is sent
        answer = orjson.loads(await response.read())
    given = answer["input"]["input_files"] if path == "/ui/inputs" else answer["input"]
    assert (response.status, given) == (200, files)


@pytest.mark.parametrize("random", [True, False], ids=["stored-large", "inflates-large"])
@pytest.mark.parametrize("path", ["/inputs", "/ui/inputs"])
async def test_clients_that_never_read_a_large_input_hold_a_slice_each(client, conn, path, random):
    """Each was handed the whole input, joined (~2x its size): 20 stalled clients of a 52 MB
    input held 1.2 GB until body_timeout. It is inflated (and read, when stored large) a slice
    at a time as the client takes it; a simulation deleted meanwhile then cuts the answers
    short (one read whole goes on, as an answer sent in one piece does)."""
    await login(client)
    job_id, _ = await large_input(client, random)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value
    request = (
        f"GET {path}?job_id={job_id} HTTP/1.1\r\nHost: x\r\nCookie: access_token={cookie}\r\n\r\n"
    )
    tracemalloc.start()
    try:
        sockets = [slow_socket(client, request.encode()) for _ in range(4)]
        await asyncio.sleep(2)  # not reading
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 16 * MIB, f"{held / MIB:.0f} MiB held by 4 clients of a 24 MB input"
    await set_simulation(conn, job_id, job_state="FAILED")
    assert (await client.delete("/user/simulations", params={"job_id": job_id})).status == 200
    for sock in sockets:
        with sock:
            assert (await read_rest(sock) < 24_000_000) is random
