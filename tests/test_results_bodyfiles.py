"""Body files (server/results/caches/bodyfiles.py): a finished simulation's large gzip
`GET /results` body kept on disk and sent from there, never stale, never kept past the
simulation's delete, and the directory kept within its budget."""

import asyncio
import gzip
import os
import socket
import subprocess
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import orjson
import pytest

from server.app import create_app
from server.keys import BODY_FILES
from server.results.caches.bodyfiles import BodyFiles
from server.results.fetch.render import SINGLE_WRITE
from tests.helpers import (
    KEY,
    answer,
    eventually,
    login,
    set_key,
    set_task,
    small_filesystem,
    submit,
    upload_pages,
)
from tests.test_head import large_pages

FINISH = "UPDATE simulations SET job_state = 'COMPLETED', end_time = now() WHERE job_id = $1"


async def large_result(client, conn, finish: bool = True, seed: int = 15, count: int = 4) -> str:
    """A one-task simulation with a result whose gzip body is streamed (`count` pages of
    ~0.9 MB), finished by its worker (`POST /tasks`) when `finish`."""
    job_id = await submit(client, ntasks=1)
    await set_key(conn, job_id)
    assert await upload_pages(client, job_id, large_pages(count, seed=seed)) == 202
    if finish:
        identity = {"simulation_id": job_id, "update_key": KEY}
        for state in ("RUNNING", "COMPLETED"):
            await set_task(client, identity, 1, task_state=state)
    return job_id


def files_of(client, job_id: str) -> list[Path]:
    directory = client.app[BODY_FILES].directory
    return sorted(directory.glob(f"{job_id}.*")) if directory.exists() else []


async def written(client, job_id: str) -> Path:
    """The body file of `job_id` once it is written (a background task)."""
    found = await eventually(lambda: _one(files_of(client, job_id)))
    assert found.name.endswith(".gz")
    return found


async def _one(paths: list[Path]) -> Path | None:
    return paths[0] if len(paths) == 1 and not paths[0].name.endswith(".part") else None


def expected_json() -> dict:
    return {"message": "Results", "estimators": [{"name": "z", "pages": large_pages()}]}


async def test_a_finished_result_is_sent_from_its_body_file(client, conn):
    await login(client)
    job_id = await large_result(client, conn)
    path = await written(client, job_id)
    status, headers, body = await answer(client, job_id, "gzip")
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert int(headers["Content-Length"]) == len(body) > SINGLE_WRITE
    assert body == path.read_bytes()
    assert orjson.loads(gzip.decompress(body)) == expected_json()
    # From the file: the pages are no longer read (here removed by hand, no notification).
    await conn.execute("DELETE FROM pages")
    assert await answer(client, job_id, "gzip") == (status, headers, body)


async def slow_fetch(client, job_id: str) -> bytes:
    """The body of a gzip GET /results read 16 KiB at a time with pauses, through a small
    receive buffer: the server's writes wait in its transport meanwhile."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.server.host, client.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    cookie = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
    writer.write(
        f"GET /results?job_id={job_id} HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n"
        "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode()
    )
    received = bytearray()
    while piece := await reader.read(16 << 10):
        received += piece
        await asyncio.sleep(0.001)
    writer.close()
    return bytes(received.split(b"\r\n\r\n", 1)[1])


async def test_files_sent_at_once_to_slow_and_fast_clients_stay_whole(client, conn):
    """Read buffers are read into again only once what was written from them has left (the
    transport holds what it has not sent): a slow client and fast ones of another file, at
    once, each get their whole file."""
    await login(client)
    # 11 MB: more than the sockets' buffers take, so that the transport holds what it has not
    # sent yet (a buffer read into then would change what the slow client gets).
    jobs = [await large_result(client, conn, seed=seed, count=12) for seed in (1, 2)]
    files = [(await written(client, job_id)).read_bytes() for job_id in jobs]
    assert files[0] != files[1]

    async def fast() -> list[bytes]:
        return [(await answer(client, jobs[1], "gzip"))[2] for _ in range(10)]

    slow, fast_bodies = await asyncio.gather(slow_fetch(client, jobs[0]), fast())
    assert slow == files[0]
    assert fast_bodies == [files[1]] * 10


async def test_deleting_the_simulation_removes_its_file_before_the_delete_returns(client, conn):
    await login(client)
    job_id = await large_result(client, conn)
    await written(client, job_id)
    # Being written by another process, or left by one killed while it wrote (kept before).
    (client.app[BODY_FILES].directory / f"{job_id}.other.gz.1.part").write_bytes(b"p")
    response = await client.delete("/user/simulations", params={"job_id": job_id})
    assert response.status == 200
    assert files_of(client, job_id) == []
    assert (await answer(client, job_id, "gzip"))[0] == 404


async def test_a_result_finished_elsewhere_gets_its_file_when_fetched(client, conn):
    await login(client)
    job_id = await large_result(client, conn, finish=False)
    await conn.execute(FINISH, job_id)  # as the SLURM reconciler or another server would
    status, _, first = await answer(client, job_id, "gzip")  # from the pages
    assert status == 200
    assert (await written(client, job_id)).read_bytes() == first
    assert (await answer(client, job_id, "gzip"))[2] == first


async def test_no_file_for_a_running_simulation_identity_or_head(client, conn):
    await login(client)
    running = await large_result(client, conn, finish=False)
    finished = await large_result(client, conn)
    await written(client, finished)
    for job_id in (running, finished):
        status, headers, body = await answer(client, job_id, "identity")
        assert status == 200 and "Content-Encoding" not in headers
        assert orjson.loads(body) == expected_json()
    assert (await answer(client, running, "gzip"))[0] == 200
    assert (await client.head("/results", params={"job_id": running})).status == 200
    await client.app[BODY_FILES].close()  # every write started is over
    assert files_of(client, running) == []
    assert len(files_of(client, finished)) == 1


async def test_no_file_when_disabled(aiohttp_client, make_config, conn):
    off = await aiohttp_client(create_app(make_config(server={"disk_cache_size": 0})))
    await login(off)
    job_id = await large_result(off, conn)
    status, _, body = await answer(off, job_id, "gzip")
    assert status == 200 and orjson.loads(gzip.decompress(body)) == expected_json()
    await off.app[BODY_FILES].close()
    assert not off.app[BODY_FILES].directory.exists()


async def test_a_file_of_the_wrong_length_is_not_sent(client, conn):
    """A file cut short (a full disk, a crash before its sync) is never sent: the pages are."""
    await login(client)
    job_id = await large_result(client, conn)
    path = await written(client, job_id)
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])
    status, _, body = await answer(client, job_id, "gzip")
    assert (status, body) == (200, whole)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_full_disk_leaves_no_file_and_the_pages_are_sent(
    aiohttp_client, make_config, conn, caplog
):
    with small_filesystem("1m") as directory:
        config = make_config(database={"data_dir": str(directory)})
        client = await aiohttp_client(create_app(config))
        await login(client)
        job_id = await large_result(client, conn)  # its body: 3.6 MB
        await client.app[BODY_FILES].close()
        assert list((directory / "body-files").iterdir()) == []
        assert "not written (OSError: [Errno 28] No space left on device)" in caplog.text
        status, _, body = await answer(client, job_id, "gzip")
        assert status == 200 and orjson.loads(gzip.decompress(body)) == expected_json()
        await client.close()


async def test_a_body_that_ends_short_leaves_no_file(tmp_path, caplog):
    """The pages of a body can end before its length (its simulation deleted while the file
    was written): no file is kept, and nothing being written is left behind."""
    files = BodyFiles(tmp_path / "bodies", max_bytes=1 << 20)
    files.start()

    async def half() -> AsyncGenerator[bytes, None]:
        yield b"x" * 50

    files.write_soon("job.abc.gz", 100, half)
    await files.close()
    assert list(files.directory.iterdir()) == []
    assert "body file job.abc.gz not written (ValueError: 50 bytes of 100)" in caplog.text
    files.write_soon("job.abc.gz", 50, half)  # the whole body: kept
    await files.close()
    assert [p.read_bytes() for p in files.directory.iterdir()] == [b"x" * 50]


async def test_no_file_is_written_for_a_deleted_simulation(tmp_path):
    """A file asked for after its simulation's deletion was seen (its index read just before
    the delete, its pages still in the page cache) is not written: deleted data is not left on
    disk until eviction. Other simulations' files still are."""
    files = BodyFiles(tmp_path / "bodies", max_bytes=1 << 20)
    files.start()

    async def body() -> AsyncGenerator[bytes, None]:
        yield b"x" * 50

    files.forget("job")
    files.write_soon("job.abc.gz", 50, body)
    files.write_soon("other.abc.gz", 50, body)
    await files.close()
    assert [p.name for p in files.directory.iterdir()] == ["other.abc.gz"]


def test_eviction_keeps_the_most_recently_used_within_the_budget(tmp_path):
    files = BodyFiles(tmp_path / "bodies", max_bytes=3000)
    files.start()
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = files.directory / f"{name}.x.gz"
        path.write_bytes(b"b" * 1200)
        os.utime(path, (now - age * 100, now - age * 100))
    left = files.directory / f"gone.x.gz.{os.getpid()}.part"  # a write a stopped process left
    left.write_bytes(b"p")
    os.utime(left, (now - 7200, now - 7200))
    writing = files.directory / "other.x.gz.1.part"  # another process's write, going on
    writing.write_bytes(b"w" * 100)
    ended = subprocess.Popen(["true"])
    ended.wait()
    killed = files.directory / f"killed.x.gz.{ended.pid}.part"  # its process gone: not waited
    killed.write_bytes(b"k")  # for an hour (nor kept until then if no process starts)
    files.evict()
    names = sorted(path.name for path in files.directory.iterdir())
    assert names == ["middle.x.gz", "newest.x.gz", "other.x.gz.1.part"]
    assert files.open("newest.x.gz", 1199) is None  # not the body's length: not sent
    opened = files.open("middle.x.gz", 1200)  # sent: its use renewed
    assert opened is not None
    opened.close()
    assert (files.directory / "middle.x.gz").stat().st_mtime > now - 50  # 100 s old before
    os.utime(files.directory / "newest.x.gz", (now - 30, now - 30))
    with files.open("newest.x.gz", 1200):  # used less than RENEW ago: its time left as it was
        assert (files.directory / "newest.x.gz").stat().st_mtime < now - 29
    files.max_bytes = 1300
    files.evict()
    assert sorted(path.name for path in files.directory.iterdir()) == [
        "middle.x.gz",
        "other.x.gz.1.part",
    ]


async def test_room_is_made_before_a_file_is_written(tmp_path):
    """The least recently used files were removed only after a new file was written: the
    directory held up to a quarter more than its budget meanwhile."""
    files = BodyFiles(tmp_path / "bodies", max_bytes=1000)
    files.start()
    now = time.time()
    for age, name in enumerate(["newer", "older"]):
        path = files.directory / f"{name}.x.gz"
        path.write_bytes(b"o" * 400)
        os.utime(path, (now - age * 10, now - age * 10))
    seen = []

    async def body() -> AsyncGenerator[bytes, None]:
        seen.append(sorted(path.name for path in files.directory.glob("*.gz")))
        yield b"n" * 250

    files.write_soon("new.x.gz", 250, body)
    await files.close()
    assert seen == [["newer.x.gz"]]  # 400 bytes and the 250 to come: within the 1000
    assert sorted(path.name for path in files.directory.iterdir()) == ["new.x.gz", "newer.x.gz"]


@pytest.mark.parametrize(("size", "kept"), [(0, False), (1, True), (250, True), (251, False)])
def test_a_body_over_a_quarter_of_the_budget_gets_no_file(tmp_path, size, kept):
    assert BodyFiles(tmp_path, max_bytes=1000).keeps(size) is kept


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, set before the app (and its directories) is made."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_body_files_are_for_this_account_only(umask_022, client, conn):
    """Body files hold users' results, as job directories do (0700): no other account of the
    host reads them (they were 0644 in a 0755 directory)."""
    await login(client)
    job_id = await large_result(client, conn)
    path = await written(client, job_id)
    modes = (path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777)
    assert modes == (0o700, 0o600)
