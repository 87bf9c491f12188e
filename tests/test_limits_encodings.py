"""Request bodies' content encodings (gzip, deflate, their aliases and what is not one) and the
size limit's boundary, against the real server (its connection settings are run.py's)."""

import asyncio
import gzip
import io
import zlib

import orjson
import pytest

from server.app import create_app
from tests.helpers import KEY, login, register, set_key, submit
from tests.limits import BODY_ROUTES, PLAIN, chunked, raw_request, response_of, started


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_not_what_its_encoding_says_is_400(client, method, path, encoding) -> None:
    await login(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.request(method, path, data=PLAIN, headers=headers)
    expected = {"message": f"Request body is not valid {encoding} data"}
    assert (response.status, await response.json()) == (400, expected)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
async def test_unsupported_encoding_is_415(client, method, path, encoding) -> None:
    await login(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.request(method, path, data=PLAIN, headers=headers)
    expected = {"message": f"Unsupported Content-Encoding: {encoding} (use gzip, deflate or none)"}
    assert (response.status, await response.json()) == (415, expected)


@pytest.mark.parametrize(
    ("encode", "encoding"),
    [
        (gzip.compress, "gzip"),
        (zlib.compress, "deflate"),
        (lambda data: zlib.compress(data, wbits=-15), "deflate"),  # raw deflate, sent as deflate
    ],
)
async def test_encoded_bodies_are_inflated(client, encode, encoding) -> None:
    await register(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.post("/auth/login", data=encode(PLAIN), headers=headers)
    assert response.status == 202, await response.text()


@pytest.mark.parametrize("past", [114, 120, 133])
async def test_a_deflate_body_whose_end_crosses_a_piece_bound_is_read_whole(client, past) -> None:
    """A body is inflated in pieces of at most 1 MiB. When its last bytes are a back-reference
    across that bound, zlib has read all its input but still holds output: that valid body was
    a 400 "not valid deflate data (truncated)", every time it was sent."""
    await login(client)
    body = PLAIN + b" " * ((1 << 20) + past - len(PLAIN))
    headers = {"Content-Type": "application/json"}
    plain = await client.post("/jobs/direct", data=io.BytesIO(body), headers=headers)
    raw = zlib.compress(body, 1, wbits=-15)
    headers["Content-Encoding"] = "deflate"
    inflated = await client.post("/jobs/direct", data=raw, headers=headers)
    expected = (400, {"message": "Missing field: sim_type"})  # the body was read whole
    assert (
        (inflated.status, await inflated.json()) == (plain.status, await plain.json()) == expected
    )


async def test_truncated_gzip_is_400(client) -> None:
    body = gzip.compress(PLAIN)[:-10]
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    expected = {"message": "Request body is not valid gzip data (truncated)"}
    assert (response.status, await response.json()) == (400, expected)


async def test_gzip_bomb_stops_at_the_limit(aiohttp_client, make_config, conn) -> None:
    client = await started(aiohttp_client, make_config, server={"worker_max_body_size": 1 << 20})
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    head = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "logfiles": {"a": ""}})
    bomb = gzip.compress(head[:-2] + b" " * (64 << 20) + b"}}")  # 64 MiB from 64 KiB
    response = await client.post("/logfiles", data=bomb, headers={"Content-Encoding": "gzip"})
    expected = {"message": f"Request body larger than {1 << 20} bytes"}
    assert (response.status, await response.json()) == (413, expected)
    assert await conn.fetchval("SELECT count(*) FROM logfiles") == 0


async def test_encoding_that_is_not_utf8_is_415(client) -> None:
    """Header bytes that are not UTF-8 reach the application as lone surrogates: the answer
    naming the encoding must still be JSON, not aiohttp's plain-text 500."""
    head = (
        b"PUT /auth/register HTTP/1.1\r\nHost: x\r\nContent-Encoding: \xff\r\nContent-Length: 2\r\n"
    )
    reader, writer = await raw_request(client, head, b"{}")
    answer = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 415 "), answer
    expected = b'{"message":"Unsupported Content-Encoding: ? (use gzip, deflate or none)"}'
    assert answer.endswith(expected), answer


async def test_data_after_the_end_of_a_gzip_body_is_400(client) -> None:
    await register(client)
    body = gzip.compress(PLAIN) + b"not gzip" * 100
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    expected = {"message": "Request body is not valid gzip data"}
    assert (response.status, await response.json()) == (400, expected)


async def test_gzip_body_of_several_members_is_inflated_whole(client) -> None:
    """RFC 1952: a gzip file is a series of members (what `cat a.gz b.gz` makes)."""
    await register(client)
    body = gzip.compress(PLAIN[:20]) + gzip.compress(PLAIN[20:])
    assert gzip.decompress(body) == PLAIN
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "gzip"})
    assert response.status == 202, await response.text()


async def test_data_after_the_end_of_a_deflate_body_is_400(client) -> None:
    await register(client)
    body = zlib.compress(PLAIN) + b"trailing"
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "deflate"})
    expected = {"message": "Request body is not valid deflate data"}
    assert (response.status, await response.json()) == (400, expected)


async def test_content_encoding_in_two_header_lines_is_read_as_one_list(client) -> None:
    """RFC 9110 5.3: two `Content-Encoding` lines mean one list; only the first was read, and
    a body gzipped twice was inflated once, then parsed as JSON (400 instead of 415)."""
    body = gzip.compress(gzip.compress(PLAIN))
    message = "Unsupported Content-Encoding: gzip, gzip (use gzip, deflate or none)"
    for lines in (b"Content-Encoding: gzip, gzip\r\n", b"Content-Encoding: gzip\r\n" * 2):
        head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += lines + b"Content-Length: %d\r\n" % len(body)
        reader, writer = await raw_request(client, head, body)
        assert await response_of(reader) == (415, {"message": message})
        writer.close()


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return type(other) is int

    def __repr__(self) -> str:
        return "ANY_INT"


ANY_INT = _AnyInt()


# --- server/limits/bodies.py: the size limit's boundary, and the encodings a body may have ---

LIMIT = 200


def padded(size: int) -> bytes:
    """The login body, padded with blanks to exactly `size` bytes."""
    return PLAIN[:-1] + b" " * (size - len(PLAIN)) + b"}"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_of_exactly_the_limit_is_read_one_more_byte_is_413(
    aiohttp_client, make_config, conn, framing
):
    """README: at most `server.max_body_size` bytes; 413 past it, not at it."""
    client = await aiohttp_client(create_app(make_config(server={"max_body_size": LIMIT})))
    await register(client)
    json = {"Content-Type": "application/json"}

    def body(size: int):
        return padded(size) if framing == "content-length" else chunked(padded(size))

    response = await client.post("/auth/login", data=body(LIMIT), headers=json)
    assert response.status == 202, await response.text()
    response = await client.post("/auth/login", data=body(LIMIT + 1), headers=json)
    assert (response.status, await response.json()) == (
        413,
        {"message": f"Request body larger than {LIMIT} bytes"},
    )


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("x-gzip", gzip.compress),  # gzip's other name (RFC 9110, 8.4.1.3)
        ("GZIP", gzip.compress),  # content codings are case-insensitive (RFC 9110, 8.4.1)
        ("Deflate", zlib.compress),
        ("identity", lambda data: data),
    ],
)
async def test_encodings_by_other_names_are_inflated(client, encoding, encode):
    await register(client)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.post("/auth/login", data=encode(PLAIN), headers=headers)
    assert response.status == 202, await response.text()
    assert await response.json() == {
        "message": "Login successful",
        "access_exp": ANY_INT,
        "refresh_exp": ANY_INT,
    }


async def test_a_deflate_body_of_two_streams_is_400(client):
    """Unlike gzip (a series of members), deflate is one zlib stream: a second one after it is
    data after the end of the body."""
    await register(client)
    body = zlib.compress(PLAIN[:20]) + zlib.compress(PLAIN[20:])
    response = await client.post("/auth/login", data=body, headers={"Content-Encoding": "deflate"})
    expected = {"message": "Request body is not valid deflate data"}
    assert (response.status, await response.json()) == (400, expected)
