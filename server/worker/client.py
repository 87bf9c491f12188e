"""The worker's side of the worker protocol: `POST /tasks`, `/jobs`, `/logfiles`, `/results`.

Workers on HPC nodes reach the server over slow or flaky links, so every call is retried on a
connection error, a timeout or a 5xx answer, with exponential backoff, until `retry_timeout`
seconds have passed since its first attempt (a certificate not trusted is not retried). That is
safe because every one of these endpoints is idempotent (the same state, the same log name, the
same page numbers replace what was there).
The update key travels in the Authorization header and is never logged. The server is reached
through the proxy the environment names, if any (HTTPS_PROXY, HTTP_PROXY, NO_PROXY:
server.proxies), as an HPC node may reach the outside only through one.
"""

import asyncio
import gzip
import logging
from typing import Any

import aiohttp
import orjson

from server.proxies import request_options
from server.worker.settings import Settings

log = logging.getLogger(__name__)

FIRST_DELAY = 0.25
MAX_DELAY = 30.0
CONNECT_TIMEOUT, READ_TIMEOUT = 30.0, 300.0  # per attempt, and never past retry_timeout


class ServerError(Exception):
    """The server could not be reached, or refused a request: the worker cannot report."""


class Unreachable(ServerError):
    """Retries ran out (connection errors, timeouts, 5xx)."""


class Rejected(ServerError):
    """A 4xx answer: retrying cannot help."""

    def __init__(self, path: str, status: int, message: str) -> None:
        super().__init__(f"POST {path} was refused with {status}: {message}")
        self.status = status
        self.message = message


class JobEnded(Rejected):
    """409: the job is terminal (cancelled, or failed): the work is no longer wanted."""


def _message(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")


class ServerClient:
    """One worker's connection to the server, for one simulation."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {settings.update_key}",
        }
        # The proxy, if any, worked out once: the environment does not change meanwhile.
        self._proxy = request_options(settings.url, headers)
        self._headers: dict[str, str] = self._proxy.pop("headers")

    async def update_task(self, **update: Any) -> None:
        body = {"task_id": self._settings.task_id, "update_dict": update}
        await self.post("/tasks", body)

    async def update_job(self, state: str) -> None:
        await self.post("/jobs", {"job_state": state})

    async def save_logfiles(self, logfiles: dict[str, str]) -> None:
        """Post log files; a refusal other than the job's end (413: the owner's storage quota)
        is only logged, so that the state reported next still ends the task or the job."""
        try:
            await self.post("/logfiles", {"logfiles": logfiles})
        except JobEnded:
            raise
        except Rejected as exc:
            log.warning("log files not saved: %s", exc)

    async def save_results(self, estimators: list[dict[str, Any]]) -> None:
        await self.post("/results", {"estimators": estimators}, compress=True)

    async def post(self, path: str, body: dict[str, Any], compress: bool = False) -> None:
        """POST `body` (plus the simulation id); raise ServerError unless it is accepted."""
        data = orjson.dumps({"simulation_id": self._settings.simulation_id, **body})
        headers = dict(self._headers)
        if compress:
            # Results are large and compress well; the server inflates gzip bodies itself.
            data = await asyncio.to_thread(gzip.compress, data, 6)
            headers["Content-Encoding"] = "gzip"
        status, answer = await self._send(path, data, headers)
        if status == 409:
            raise JobEnded(path, status, _message(answer))
        if status >= 300:
            raise Rejected(path, status, _message(answer))

    async def _send(self, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and body of the answer, tried again with backoff on connection errors
        and 5xx answers for up to retry_timeout seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.retry_timeout
        delay = FIRST_DELAY
        while True:
            left = max(deadline - loop.time(), 0.1)  # a server that never answers: given up on
            answered = await self._attempt(path, data, headers, left)
            if not isinstance(answered, str):
                return answered
            remaining = deadline - loop.time()
            if remaining <= 0:
                budget = self._settings.retry_timeout
                raise Unreachable(f"POST {path} failed for {budget:g} s, last: {answered}")
            wait = min(delay, remaining)
            log.warning("POST %s failed (%s); retrying in %.2f s", path, answered, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_DELAY)

    async def _attempt(
        self, path: str, data: bytes, headers: dict[str, str], left: float
    ) -> tuple[int, bytes] | str:
        """One POST, its timeouts bounded by the `left` seconds: the status and body of an
        answer below 500, or what went wrong (worth a retry)."""
        timeout = aiohttp.ClientTimeout(
            sock_connect=min(CONNECT_TIMEOUT, left), sock_read=min(READ_TIMEOUT, left)
        )
        url = self._settings.url + path
        try:
            async with self._session.post(
                url, data=data, headers=headers, timeout=timeout, **self._proxy
            ) as response:
                answer = await response.read()
                return (
                    (response.status, answer)
                    if response.status < 500
                    else f"HTTP {response.status}"
                )
        except aiohttp.ClientConnectorCertificateError as exc:  # never better on a retry
            raise Unreachable(
                f"POST {path}: the server's certificate is not trusted here"
                f" ({exc.certificate_error}); SSL_CERT_FILE can name its CA"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__ + (f" ({exc})" if str(exc) else "")
