"""Log files stored in parts (migration 0017), against a real server: exact round trips around
the part boundaries, files replaced while they are sent or stored concurrently, the quota."""

import asyncio
import io

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.store.logfiles import PART
from tests.helpers import FLUKA_FILES, KEY, add_logfiles, login, set_key, submit

MIB = 1 << 20


async def get(client, path: str) -> tuple[int, dict]:
    response = await client.get(path)
    return response.status, await response.json()


async def logs_job(client, conn) -> str:
    await login(client)
    job_id = await submit(client, FLUKA_FILES)
    await set_key(conn, job_id)
    return job_id


async def post_logs(client, job_id: str, logfiles: dict[str, str]) -> tuple[int, dict]:
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": logfiles}
    response = await client.post(
        "/logfiles",
        data=io.BytesIO(orjson.dumps(body)),
        headers={"Content-Type": "application/json"},
    )
    return response.status, await response.json()


# Log files in parts


async def test_a_log_file_read_in_a_later_batch_replaced_by_a_longer_one_is_never_torn(
    client, conn
):
    """`b` is listed (one part) while `a` fills the first batches; `b` is replaced by a file of
    three parts before its batch is read. The client must get the old `b`, the new `b`, or a
    cut connection (README: "never a text made of both" / a torn text) - not the new file's
    first part alone."""
    job_id = await logs_job(client, conn)
    old_b, new_b = "old", "N" * PART + "M" * PART + "tail"
    await add_logfiles(client, job_id, {"a": "a" * (16 * PART), "b": old_b})
    got = None
    async with client.get(f"/logfiles?job_id={job_id}") as response:
        assert response.status == 200
        first = await response.content.readexactly(1 << 20)  # "a" is being written
        await add_logfiles(client, job_id, {"b": new_b})
        try:
            got = orjson.loads(first + await response.read())
        except aiohttp.ClientPayloadError:
            got = None  # cut: acceptable
    if got is not None:
        served = got["logfiles"]["b"]
        assert served in (old_b, new_b), (
            f"b served as {len(served)} characters: neither the old (3) nor the "
            f"new ({len(new_b)}) file"
        )


@pytest.mark.parametrize(
    ("replaced", "status", "body"),
    [
        (1, 200, {"message": "Logfiles", "logfiles": {"a": "new 1"}}),
        (3, 503, {"message": "Log files changed while they were read; try again"}),
    ],
)
async def test_a_log_file_replaced_before_anything_was_sent_is_read_again(
    client, conn, monkeypatch, replaced, status, body
):
    """Replaced after the files were listed, before their first batch was read: nothing was
    sent yet, so they are read again (this was a 503 without Retry-After); replaced at each of
    three reads, a 503 the client may retry after a second."""
    from server.store import logfiles

    job_id = await logs_job(client, conn)
    await add_logfiles(client, job_id, {"a": "old"})
    real, reads = logfiles._fetch, []

    async def fetch(db, sim_pk, listed):
        reads.append(listed)
        if len(reads) <= replaced:
            await add_logfiles(client, job_id, {"a": f"new {len(reads)}"})
        return await real(db, sim_pk, listed)

    monkeypatch.setattr(logfiles, "_fetch", fetch)
    response = await client.get("/logfiles", params={"job_id": job_id})
    assert (response.status, await response.json()) == (status, body)
    assert response.headers.get("Retry-After") == ("1" if status == 503 else None)


SIZES = [0, 1, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + 1]


def texts() -> dict[str, str]:
    files = {f"ascii_{n:08}": ("0123456789abcdef\n" * (n // 17 + 1))[:n] for n in SIZES}
    # a 4-byte character straddling each part boundary position, 2-byte ones, escapes
    files["wide"] = ("\U0001f600" * (PART - 1)) + "\u00e9\u2713" + "\U0001f600" * 3
    files["escapes"] = '"\\\x01\x1b[0m\t\r\n\u2028' * (PART // 8 + 5)
    files["nul"] = "a\0b" + "c" * PART + "\0"
    return files


async def test_log_texts_round_trip_exactly_around_part_boundaries(client, conn):
    job_id = await logs_job(client, conn)
    files = texts()
    assert await post_logs(client, job_id, files) == (202, {"message": "Logfiles saved"})
    expected = {**files, "nul": files["nul"].replace("\0", "\ufffd")}
    status, body = await get(client, f"/logfiles?job_id={job_id}")
    assert status == 200
    assert body == {"message": "Logfiles", "logfiles": expected}
    rows = await conn.fetch("SELECT name, part, length(content) AS n FROM logfiles ORDER BY 1, 2")
    for name, text in expected.items():
        lengths = [r["n"] for r in rows if r["name"] == name]
        want = [len(text[i : i + PART]) for i in range(0, max(len(text), 1), PART)]
        assert lengths == want, name
    # the UI dialect the same
    status, body = await get(client, f"/ui/logfiles?job_id={job_id}")
    assert (status, body) == (200, {"message": "Logfiles", "logfiles": expected})
    # HEAD: headers only
    head = await client.head(f"/logfiles?job_id={job_id}")
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Content-Type"].startswith("application/json")


async def test_lone_surrogates_are_400_and_store_nothing(client, conn):
    job_id = await logs_job(client, conn)
    body = b'{"simulation_id":"%s","update_key":"%s","logfiles":{"a":"x\\ud800y"}}' % (
        job_id.encode(),
        KEY.encode(),
    )
    response = await client.post(
        "/logfiles", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_many_files_replacing_shorter_and_longer_and_the_404(client, conn):
    job_id = await logs_job(client, conn)
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        404,
        {"message": "Logfiles not available"},
    )
    head = await client.head(f"/logfiles?job_id={job_id}")
    assert head.status == 404
    files = {f"task_{n}_stdout": f"line {n}\n" * (n * 30) for n in range(300)}
    files |= {"Zeta": "z", "alpha": "a", "_x": "", "\u00e9t\u00e9": "summer"}
    assert (await post_logs(client, job_id, files))[0] == 202
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": files},
    )
    # replace: longer (1 -> 3 parts), shorter (3 -> 1), equal
    files["alpha"] = "L" * (2 * PART + 7)
    assert (await post_logs(client, job_id, {"alpha": files["alpha"]}))[0] == 202
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": files},
    )
    files["alpha"] = "short"
    assert (await post_logs(client, job_id, {"alpha": "short"}))[0] == 202
    assert await get(client, f"/logfiles?job_id={job_id}") == (
        200,
        {"message": "Logfiles", "logfiles": files},
    )
    parts = await conn.fetchval("SELECT count(*) FROM logfiles WHERE name = 'alpha'")
    assert parts == 1


async def test_concurrent_posts_of_one_name_store_one_whole_file(client, conn):
    job_id = await logs_job(client, conn)
    one, other = "1" * (3 * PART + 5), "2" * (PART + 9)
    for _ in range(4):
        results = await asyncio.gather(
            post_logs(client, job_id, {"log": one}), post_logs(client, job_id, {"log": other})
        )
        assert results == [(202, {"message": "Logfiles saved"})] * 2
        rows = await conn.fetch(
            "SELECT part, content, xmin::text AS x FROM logfiles WHERE name = 'log' ORDER BY part"
        )
        text = "".join(r["content"] for r in rows)
        assert text in (one, other)
        assert [r["part"] for r in rows] == list(range(len(rows)))
        assert len({r["x"] for r in rows}) == 1


async def test_log_parts_count_against_the_quota_and_go_with_the_simulation(client, conn):
    job_id = await logs_job(client, conn)
    files = {"big": "x" * (2 * PART + 1), "small": "y"}
    before = await conn.fetchval("SELECT stored_bytes FROM simulations WHERE job_id = $1", job_id)
    assert (await post_logs(client, job_id, files))[0] == 202
    after = await conn.fetchval("SELECT stored_bytes FROM simulations WHERE job_id = $1", job_id)
    # name + content + 64 bytes a row (part)
    assert after - before == 3 * (3 + 64) + (2 * PART + 1) + (5 + 64 + 1)
    await conn.execute("UPDATE simulations SET job_state = 'COMPLETED' WHERE job_id = $1", job_id)
    response = await client.delete(f"/user/simulations?job_id={job_id}")
    assert (response.status, await response.json()) == (200, {"message": "Simulation deleted"})
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_a_log_over_the_quota_is_413_and_stores_nothing(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 3 * MIB})))
    job_id = await logs_job(client, conn)
    await post_logs(client, job_id, {"keep": "k"})
    status, body = await post_logs(client, job_id, {"keep": "x" * (3 * PART), "new": "n"})
    assert status == 413 and body["message"].startswith("Storage quota exceeded")
    rows = await conn.fetch("SELECT name, part, content FROM logfiles")
    assert [tuple(r) for r in rows] == [("keep", 0, "k")]
