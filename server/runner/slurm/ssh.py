"""A cluster's login node over SSH (asyncssh): one connection per cluster, reused.

The connection is opened on first use and again after it breaks. A command that may have run
before the connection broke (sbatch) is never repeated: only read-only ones ask for `retry`.
Files go up over SFTP on the same connection, each step within COMMAND_TIMEOUT (a stall fails
the upload, a slow link does not). Host keys are checked against the cluster's `known_hosts`
file (or ~/.ssh/known_hosts); logins use the cluster's key file.
"""

import asyncio
import contextlib
import posixpath
import shlex
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncssh

from server.config import ClusterConfig
from server.runner.local.process import OUTPUT_TAIL
from server.runner.slurm.shell import COMMAND_TIMEOUT, Completed, ShellError, failure

CONNECT_TIMEOUT = 15.0
# An upload goes in pieces, each within COMMAND_TIMEOUT: large inputs on a slow link are not
# cut, a stalled connection fails the submission instead of waiting for keepalives (~2 min).
UPLOAD_CHUNK = 1 << 20
# Sessions open at once on the shared connection (each command, each upload's SFTP): sshd refuses
# more than its MaxSessions (default 10) with "open failed".
MAX_SESSIONS = 8
OPEN_ATTEMPTS, OPEN_RETRY_DELAY = 20, 0.25  # a session sshd refused, asked for again
PROBE_TIMEOUT = 10.0  # after a command timed out: does the login node still answer?
T = TypeVar("T")
PRIVATE_DIR = asyncssh.SFTPAttrs(permissions=0o700)


class SshShell:
    def __init__(self, cluster: ClusterConfig) -> None:
        self._cluster = cluster
        self._connection: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)
        self._users: Counter[asyncssh.SSHClientConnection] = Counter()  # our commands on each
        self._retired: set[asyncssh.SSHClientConnection] = set()  # closed once none runs on it

    async def run(self, command: str, stdin: str = "", retry: bool = False) -> Completed:
        try:
            return await self._run_once(command, stdin)
        except ShellError:
            if not retry:
                raise
        return await self._run_once(command, stdin)  # on a fresh connection

    async def _run_once(self, command: str, stdin: str) -> Completed:
        connection = await self._connect()
        with self._using(connection):
            try:
                async with self._sessions:
                    done = await _command(connection, command, stdin)
            except TimeoutError:
                # A slow command (a large rm -rf, a grep of a large file), or a dead link: only
                # the latter drops the connection, with every other command running on it.
                # sshd keeps a slow command's session (MaxSessions) until the command ends:
                # new sessions go to a new connection.
                if await _answers(connection):
                    self._retire(connection)
                else:
                    self._drop(connection)
                raise ShellError(
                    f"{self._cluster.cluster_name}: no answer within {COMMAND_TIMEOUT:.0f} s"
                ) from None
            except (asyncssh.Error, OSError) as exc:
                self._drop(connection, exc)
                raise failure(self._cluster.cluster_name, exc) from None
        if done.exit_status is None and done.exit_signal is None:  # no status: the link broke
            raise ShellError(f"{self._cluster.cluster_name}: the connection closed meanwhile")
        status = -1 if done.exit_status is None else done.exit_status  # None: killed by a signal
        return Completed(status, _text(done.stdout), _text(done.stderr))

    async def write_files(self, directory: str, files: dict[str, bytes]) -> None:
        connection = await self._connect()
        try:
            with self._using(connection):
                async with self._sessions:
                    await _upload(connection, directory, files)
        except TimeoutError:  # before OSError, of which it is one
            self._drop(connection)  # what the stalled steps wait for ends with the connection
            raise ShellError(
                f"{self._cluster.cluster_name}: uploading the job's files stalled "
                f"(no progress for {COMMAND_TIMEOUT:.0f} s)"
            ) from None
        except Refused as exc:  # the cluster answered: the connection is sound, and kept
            raise ShellError(f"{self._cluster.cluster_name}: {exc}") from None
        except (asyncssh.Error, OSError) as exc:
            self._drop(connection, exc)
            raise failure(self._cluster.cluster_name, exc) from None

    async def read_tail(self, path: str) -> str:
        try:
            done = await self.run(f"tail -c {OUTPUT_TAIL} -- {shlex.quote(path)}", retry=True)
        except ShellError:
            return ""
        return done.stdout.replace("\0", "\ufffd") if done.returncode == 0 else ""

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            await self._connection.wait_closed()
            self._connection = None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            cluster = self._cluster
            # Unset settings are left out: asyncssh then uses ~/.ssh (never "no host check").
            settings = {
                "username": cluster.user,
                "client_keys": [cluster.key_file] if cluster.key_file else None,
                "known_hosts": cluster.known_hosts,
            }
            given = {name: value for name, value in settings.items() if value}
            try:
                self._connection = await asyncssh.connect(
                    cluster.host,
                    cluster.port,
                    connect_timeout=CONNECT_TIMEOUT,
                    keepalive_interval=30,
                    **given,
                )
            except (asyncssh.Error, OSError, TimeoutError, ValueError) as exc:
                # ValueError: a key file asyncssh cannot use (KeyImportError: one with a
                # passphrase, a public key) is, like an unreachable host, never a crash.
                raise failure(
                    f"{cluster.cluster_name}: cannot connect", exc, private=True
                ) from None
            return self._connection

    @contextlib.contextmanager
    def _using(self, connection: asyncssh.SSHClientConnection) -> Iterator[None]:
        """Count a command or upload on `connection`; a retired one is closed after its last."""
        self._users[connection] += 1
        try:
            yield
        finally:
            self._users[connection] -= 1
            if not self._users[connection]:
                del self._users[connection]
                if connection in self._retired:
                    self._retired.discard(connection)
                    connection.close()

    def _retire(self, connection: asyncssh.SSHClientConnection) -> None:
        """No new session on `connection` (sshd holds sessions of commands we gave up on): what
        runs on it finishes, then it is closed (_using)."""
        if self._connection is connection:
            self._connection = None
        self._retired.add(connection)

    def _drop(
        self, connection: asyncssh.SSHClientConnection, exc: BaseException | None = None
    ) -> None:
        """Abort a broken connection: what else runs on it fails too. A session sshd refused
        (ChannelOpenError) leaves the connection and the others' commands, such as an sbatch
        whose output says what it submitted, alone."""
        if isinstance(exc, asyncssh.ChannelOpenError):
            return
        connection.abort()
        if self._connection is connection:
            self._connection = None


async def _command(
    connection: asyncssh.SSHClientConnection, command: str, stdin: str
) -> asyncssh.SSHCompletedProcess:
    """One command, its session closed once it ends or COMMAND_TIMEOUT passes (TimeoutError).
    Output as bytes (decoded by _text): output that is not UTF-8 (a Latin-1 byte, a tail cut
    inside a character) is asyncssh's protocol error otherwise, the connection dropped."""
    process = await _opened(
        lambda: _step(connection.create_process(command, input=stdin.encode(), encoding=None))
    )
    try:
        return await process.wait(check=False, timeout=COMMAND_TIMEOUT)
    finally:
        process.close()


async def _opened(open_session: Callable[[], Awaitable[T]]) -> T:
    """A session, asked for again while sshd refuses it for a few seconds: MaxSessions counts
    sessions it has not let go of yet, closed ones too. A refused session never started."""
    for _ in range(OPEN_ATTEMPTS - 1):
        try:
            return await open_session()
        except asyncssh.ChannelOpenError:
            await asyncio.sleep(OPEN_RETRY_DELAY)
    return await open_session()


async def _answers(connection: asyncssh.SSHClientConnection) -> bool:
    """Whether the login node still answers on `connection` (within PROBE_TIMEOUT)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            done = await connection.run("true", check=False)
    except asyncssh.ChannelOpenError:
        return True  # a session refused (MaxSessions): it answered
    except (asyncssh.Error, OSError, TimeoutError):
        return False
    return done.exit_status is not None


async def _upload(
    connection: asyncssh.SSHClientConnection, directory: str, files: dict[str, bytes]
) -> None:
    """The files by SFTP, every step bounded by COMMAND_TIMEOUT (TimeoutError): a connection
    that stalls fails the upload, a slow one that moves does not. No step waits for a reply on
    the way out (no `async with`), so a stalled server cannot hold the failure either."""
    sftp = await _opened(lambda: _step(connection.start_sftp_client()))
    try:
        # One user's inputs, results and logs: for the cluster account only.
        with _refusal(directory):
            await _step(sftp.makedirs(directory, attrs=PRIVATE_DIR, exist_ok=True))
        for name, data in files.items():
            await _upload_file(sftp, posixpath.join(directory, name), data)
    finally:
        sftp.exit()


async def _upload_file(sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
    with _refusal(path):
        await _step(sftp.makedirs(posixpath.dirname(path), exist_ok=True))
        remote = await _step(sftp.open(path, "wb"))
        for start in range(0, len(data), UPLOAD_CHUNK):
            await _step(remote.write(data[start : start + UPLOAD_CHUNK]))
        await _step(remote.close())


class Refused(Exception):
    """The cluster refused an SFTP step (its disk or quota full, a permission): the link is
    sound."""


@contextlib.contextmanager
def _refusal(path: str) -> Iterator[None]:
    """An SFTP error status as Refused, naming `path`. OpenSSH's sftp-server says only
    "Failure" for a write the disk or quota refused, so that one gets a hint."""
    try:
        yield
    except asyncssh.SFTPError as exc:
        hint = " (is the cluster's disk or quota full?)" if exc.code == asyncssh.FX_FAILURE else ""
        raise Refused(f"cannot write {path}: {_describe(exc)}{hint}") from None


async def _step(step: Awaitable[T]) -> T:
    async with asyncio.timeout(COMMAND_TIMEOUT):
        return await step


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
