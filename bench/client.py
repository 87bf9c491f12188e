"""The large-results benchmark's HTTP client: GETs one after another on a keep-alive HTTP/1.1
connection of a blocking socket, each body read into one reused buffer and its bytes counted.

Written for the job, not taken from a library: what it measures is the server's cost per byte,
so the client must add as little per request as it can. http.client (used before 2026-12-04)
parses every response's headers with the `email` package: ~0.1 ms a fetch, 8-10 % of the time
of the 7 MB result's 2.6 MB gzip body, and a fixed cost the server does not have (the aiohttp
client, before it, cost as much as the server per fetch). Here a response's head is found in
the first bytes read, its status line checked and its `Content-Length` read with one regular
expression; a body without one (chunked) is refused, as no response measured here is chunked.
"""

import re
import socket
import time
import urllib.parse
from typing import Any, BinaryIO

READ_BUFFER = 4 << 20  # a fetch reads into this, over and over
HEAD_MAX = 64 << 10  # a response's head, at most
HEAD_END = b"\r\n\r\n"
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*(?=\r\n|\Z)", re.IGNORECASE)


class Connection:
    """A keep-alive connection to `base` (http://host:port), its GETs made with `fetch`."""

    def __init__(self, base: str) -> None:
        url = urllib.parse.urlsplit(base)
        self.host = url.netloc
        self.sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data = bytearray(READ_BUFFER)
        self.buffer = memoryview(self.data)

    def close(self) -> None:
        self.buffer.release()
        self.sock.close()

    def request(self, path: str, headers: dict[str, str]) -> bytes:
        """The bytes of a GET of `path` with `headers` (made once, sent as often as needed)."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def fetch(self, request: bytes, out: BinaryIO | None = None) -> dict[str, Any]:
        """Send `request` and read its answer to the end (its body written to `out` if given):
        time to first byte of the body, total time, the body's bytes. Anything but a 200 with a
        `Content-Length` raises."""
        started = time.perf_counter()
        self.sock.sendall(request)
        length, have = self._head(out)
        # The first byte of the body, as the time to first byte counts it:
        while length and not have:
            have = self._read(out)
        first = time.perf_counter()
        while have < length:
            have += self._read(out)
        if have != length:
            raise ConnectionError(f"{have - length} bytes after the body: not HTTP/1.1 as sent")
        done = time.perf_counter()
        return {"ttfb_ms": (first - started) * 1000, "seconds": done - started, "bytes": length}

    def _head(self, out: BinaryIO | None) -> tuple[int, int]:
        """Read until the response's head has come: the body's length, and how many of its
        bytes came with the head (written to `out` if given)."""
        got, end = 0, -1
        while end < 0:
            if got >= HEAD_MAX:
                raise ConnectionError(f"no end of the response's head in {HEAD_MAX} bytes")
            got += self._recv(got)
            end = self.data.find(HEAD_END, 0, min(got, HEAD_MAX))
        head = bytes(self.buffer[:end])
        status, length = STATUS.match(head), LENGTH.search(head)
        if status is None or status[1] != b"200" or length is None:
            raise ConnectionError(f"not a 200 with a Content-Length: {head[:200]!r}")
        start = end + len(HEAD_END)
        if out is not None:
            out.write(self.buffer[start:got])
        return int(length[1]), got - start

    def _read(self, out: BinaryIO | None) -> int:
        count = self._recv(0)
        if out is not None:
            out.write(self.buffer[:count])
        return count

    def _recv(self, offset: int) -> int:
        count = self.sock.recv_into(self.buffer[offset:])
        if not count:
            raise ConnectionError("the server closed the connection")
        return count
