"""A client that goes away in the middle of its request (a closed browser tab, a dropped network,
a worker killed during its upload) is an everyday event: the server lets it go without an
ERROR and a traceback in its log (server/http.py). Nor does a request aiohttp cannot parse
write one: no client can fill the server's log at will."""

import asyncio
import logging
import random
import signal
import socket
import struct

import pytest

from server.app import create_app
from tests.helpers import KEY, login, set_key, submit, upload_pages
from tests.test_cli import Server, with_password


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a killed process's connection often ends."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


def _cookie(client) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"].value


@pytest.mark.parametrize("path", ["/auth/login", "/jobs/direct", "/results"])
@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
async def test_a_client_that_leaves_during_its_body_logs_no_error(
    aiohttp_client, make_config, conn, caplog, path, reset
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 10000\r\nCookie: access_token={_cookie(client)}\r\n\r\n"
    ).encode()
    caplog.set_level(logging.INFO)
    with socket.create_connection((client.server.host, client.server.port)) as sock:
        sock.sendall(head + b'{"sim_type": "shieldhit", "input_files": {"a": "' + b"x" * 100)
        await asyncio.sleep(0.3)  # the handler is reading the body
        if reset:
            _reset(sock)
    await asyncio.sleep(0.5)
    assert (await client.get("/")).status == 200
    assert _errors(caplog) == []


@pytest.mark.parametrize("reading", [0.0, 1.0], ids=["while-sent", "while-waited-for"])
async def test_a_client_that_leaves_during_a_streamed_result_logs_no_error(
    aiohttp_client, make_config, conn, caplog, reading
) -> None:
    """The client resets its connection while a piece is being written, or after `reading`
    seconds of reading nothing, when the server waits for it to take what was written (aiohttp
    then fails the wait with a plain ConnectionError, not a ConnectionResetError)."""
    client = await aiohttp_client(create_app(make_config()))
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id, KEY)
    values = [random.random() for _ in range(400_000)]  # about 8 MB: streamed
    pages = [{"metadata": {"page_number": 1, "name": "dose"}, "data": {"values": values}}]
    assert await upload_pages(client, job_id, pages) == 202
    request = (
        f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: x\r\n"
        f"Cookie: access_token={_cookie(client)}\r\nAccept-Encoding: identity\r\n\r\n"
    ).encode()
    caplog.set_level(logging.INFO)
    sock = socket.create_connection((client.server.host, client.server.port))
    sock.sendall(request)
    assert await asyncio.to_thread(sock.recv, 65536)  # the body has begun
    await asyncio.sleep(reading)
    _reset(sock)
    await asyncio.sleep(1.0)
    assert (await client.get("/")).status == 200
    assert _errors(caplog) == []


def test_requests_aiohttp_cannot_parse_leave_one_debug_line_not_a_traceback(
    database_url, tmp_path
) -> None:
    """aiohttp answers them 400 itself, and logged each as an ERROR with a traceback (~550
    bytes for a request of ~40): run.py's log now says nothing of them at INFO."""
    data_dir = str(tmp_path / "data")
    server = Server(
        tmp_path, DATABASE_URL=with_password(database_url), YAPTIDE_DATABASE_DATA_DIR=data_dir
    )
    try:
        server.wait_ready()
        for request in (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"GET /a b HTTP/1.1\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(request)
                assert sock.recv(100).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.kill()
    output = server.output
    assert "Traceback" not in output and "ERROR" not in output and "malformed" not in output
    assert output.endswith("\nStopped\n"), output
