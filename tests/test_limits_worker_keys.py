"""Worker routes' update keys, checked before a body is read or parsed where they can be: in a
header, or at the start of a large body."""

import gzip

import orjson
import pytest

from tests.helpers import KEY, login, set_key, submit
from tests.limits import large_upload, raw_request, response_of


async def test_wrong_key_in_header_is_refused_before_the_body(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    # 256 MiB announced, 10 bytes sent: the answer comes without the rest.
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer wrong-key\r\nContent-Length: 268435456\r\n"
    )
    reader, writer = await raw_request(client, head, b'{"simulati')
    assert await response_of(reader) == (403, {"message": "Invalid update key"})
    writer.close()


async def test_an_ended_job_s_key_in_header_is_refused_before_the_body(client, conn) -> None:
    """A holder of an ended job's key had each body (up to 256 MiB) read, and trusted with the
    whole memory budget, before its 409: it is refused as a wrong key is, before the body."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await client.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    head = (
        b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: 268435456\r\n".encode()
    )
    reader, writer = await raw_request(client, head, b'{"simulati')
    assert await response_of(reader) == (
        409,
        {"message": "Simulation is CANCELED: no more updates are accepted"},
    )
    writer.close()


async def test_wrong_key_in_header_with_a_small_body_is_403(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    response = await client.post("/tasks", json=body, headers={"Authorization": "Bearer wrong"})
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})


async def test_wrong_key_in_a_large_body_is_refused_before_parsing(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = large_upload(job_id, "wrong-key")[:-10] + b"not json"  # parsing would say 400
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (403, {"message": "Invalid update key"})


@pytest.mark.parametrize(
    "decoy",
    [{"update_key": "a-nested-decoy"}, {"meta": '"update_key": "in a string"'}],
    ids=["nested-member", "inside-a-string"],
)
async def test_right_key_in_a_large_body_is_accepted(client, conn, decoy) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    response = await client.post("/results", data=large_upload(job_id, KEY, decoy))
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})


async def test_escaped_key_in_a_large_body_is_accepted(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    body = large_upload(job_id, "PLACEHOLDER").replace(b"PLACEHOLDER", escaped.encode())
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})


async def test_right_key_in_header_is_accepted(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await client.post("/tasks", json=body, headers=headers)
    assert (response.status, await response.json()) == (202, {"message": "Task updated"})


@pytest.mark.parametrize(
    "sent", ["gzip, key in header", "large, key in header", "large, key inside"]
)
async def test_the_key_of_a_job_that_has_ended_is_409_however_the_body_comes(
    client, conn, sent
) -> None:
    """A terminal job's key is refused as the job's end (409), also when it is checked before
    the body is read or parsed: the built-in worker sends its results gzipped with the key in
    the header, and stops quietly on a 409 only."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    assert (await client.delete("/jobs/direct", params={"job_id": job_id})).status == 200
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    if sent == "gzip, key in header":
        data = gzip.compress(orjson.dumps({"simulation_id": job_id, "estimators": []}))
        headers["Content-Encoding"] = "gzip"
    elif sent == "large, key in header":
        data = large_upload(job_id, KEY).replace(b'"update_key"', b'"no_key"')
    else:
        data = large_upload(job_id, KEY)
        del headers["Authorization"]
    response = await client.post("/results", data=data, headers=headers)
    expected = {"message": "Simulation is CANCELED: no more updates are accepted"}
    assert (response.status, await response.json()) == (409, expected)


@pytest.mark.parametrize("size", [100, 100_000], ids=["small-body", "large-body"])
async def test_bearer_key_that_is_not_utf8_is_403(client, conn, size) -> None:
    """A key header with bytes that are not UTF-8 is a wrong key (403), never a 500."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "task_id": 1, "update_dict": {"task_state": "RUNNING"}}
    data = orjson.dumps(body).ljust(size)
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
        b"Content-Length: %d\r\n" % len(data)
    )
    reader, writer = await raw_request(client, head, data)
    assert await response_of(reader) == (403, {"message": "Invalid update key"})
    writer.close()
