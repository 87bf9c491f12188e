"""A large `POST /logfiles` body (server/jobs/logsplit.py): its long texts decoded a piece at a
time give what the whole parse gave (the same texts stored, the same answers for bodies that
are not JSON or not laid out as expected), other requests are answered meanwhile, and the parts
are stored a batch at a time in one transaction."""

import asyncio
import json
import re
import time
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.errors import BadRequest
from server.jobs import logsplit
from server.limits.budget import parse_cost, paused_parse_cost
from server.limits.pauses import Pauses
from server.store import logfiles
from tests.helpers import KEY, login, set_key, submit

# A JSON string token, as a tokenizer finds it.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Texts whose escapes, pairs of \u escapes and UTF-8 characters fall on every kind of cut.
TEXTS = {
    "ascii.log": 'step 12: dose 1.5e-05 Gy\n\ttab "quoted" back\\slash\r\n' * 40,
    "wide.log": "Zürich → 東京 😀 \u2028 \x01 \x1f end\n" * 40,
    "slashes.log": "\\" * 61 + '"' + "\\\\\\n" * 17 + "x",
    "small.log": "ok",
    "nul.log": "before\0after" * 20,
}


def whole_or_error(piece: bytes) -> str | None:
    try:
        text = orjson.loads(piece)
    except orjson.JSONDecodeError:
        return None
    return text if isinstance(text, str) else None


def decoded_in_pieces(piece: bytes, size: int) -> str | None:
    with mock.patch.object(logsplit, "PIECE", size):
        try:
            return "".join(asyncio.run(logsplit.decode(piece, 0, len(piece), Pauses(0))))
        except BadRequest:
            return None


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(1, 40), st.booleans())
def test_pieces_decode_to_what_the_whole_string_does(text, size, ascii_only):
    piece = json.dumps(text).encode() if ascii_only else orjson.dumps(text)
    assert decoded_in_pieces(piece, size) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(), st.integers(1, 40))
def test_pieces_fail_where_the_whole_string_fails(content, size):
    piece = b'"' + content.replace(b'"', b"") + b'"'
    assert decoded_in_pieces(piece, size) == whole_or_error(piece)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text(alphabet='ab"\\\n\u00e9\U0001f600'),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(alphabet='k"\\'), inner),
    )
)
def test_long_strings_are_where_a_tokenizer_finds_them(document):
    body = orjson.dumps(document)
    with mock.patch.object(logsplit, "LONG", 2):  # strings of 2 bytes or more
        found = asyncio.run(logsplit.long_strings(body, Pauses(0)))
    strings = [m.span() for m in _STRING.finditer(body)]
    assert found == [(start, end) for start, end in strings if end - start > 3]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12)), st.integers(1, 9))
def test_a_text_in_pieces_is_stored_in_the_parts_the_joined_text_would_be(pieces, part):
    with mock.patch.object(logfiles, "PART", part):
        assert list(logfiles._parts(logfiles.Pieces(pieces))) == list(
            logfiles._parts("".join(pieces))
        )


@pytest.mark.parametrize(
    "line",
    [
        "\x1b[32mok\x1b[0m\n",  # a log's colour codes: an escape every few bytes
        "  3%\r",
        "\u4e2d\u6587",
        "C:\\run\\a\\",  # Windows paths: runs of two backslashes
        "\\",  # one run of 10,000 backslashes: cut inside it
        "\U0001f600",
    ],
)
def test_texts_dense_with_escapes_are_still_cut_into_pieces(line):
    """A place to cut comes at least every few bytes whatever the text (the first rule, 12
    bytes without a backslash, found none in these: each was one piece, a second of the loop)."""
    text = line * 5000
    piece = json.dumps(text).encode()
    with mock.patch.object(logsplit, "PIECE", 1000):
        pieces = asyncio.run(logsplit.decode(piece, 0, len(piece), Pauses(0)))
    assert "".join(pieces) == text
    assert len(pieces) >= len(piece) // 1100


def test_a_piece_never_takes_the_bytes_past_its_string():
    body = '"éééé"\\"'.encode()  # a backslash right after the closing quote
    with mock.patch.object(logsplit, "PIECE", 1):
        pieces = asyncio.run(logsplit.decode(body, 0, body.index(b'"', 1) + 1, Pauses(0)))
    assert "".join(pieces) == "éééé"


def test_a_run_of_backslashes_is_counted_across_windows():
    for run in (0, 1, 63, 64, 65, 200, 201):
        body = b'"' + b"a" * 100 + b"\\" * run + b'"' + b'x"'
        end = body.index(b'"', 1) + 1 if run % 2 == 0 else len(body)
        with mock.patch.object(logsplit, "LONG", 0):
            assert asyncio.run(logsplit.long_strings(body, Pauses(0))) == [(0, end)], run


async def test_the_parse_cost_counted_with_pauses_is_the_one_counted_at_once(monkeypatch):
    monkeypatch.setattr("server.limits.budget.WIDE_WINDOW", 7)
    monkeypatch.setattr("server.limits.budget.FREE_PARSE", 0)
    for body in (b'{"a":[1,2,{"b":"c,d"}]}' * 30, b'["\\u4e00",' * 40 + b"1]"):
        assert await paused_parse_cost(body, Pauses(0)) == parse_cost(body)


# Against the server


async def logs_job(client, conn) -> str:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    return job_id


async def post_raw(client, body: bytes) -> tuple[int, dict]:
    """Sent chunked with the key in the header too: a known sender's body, its key checked
    before it is read (a stranger's is parsed whole, as is one read before its key)."""

    async def chunked():
        yield body

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    response = await client.post("/logfiles", data=chunked(), headers=headers)
    return response.status, await response.json()


async def stored(conn) -> list[tuple]:
    rows = await conn.fetch("SELECT name, part, content FROM logfiles ORDER BY name, part")
    return [tuple(row) for row in rows]


def split_everything(monkeypatch, piece: int = 5) -> None:
    monkeypatch.setattr(logsplit, "SPLIT_ABOVE", 0)
    monkeypatch.setattr(logsplit, "LONG", 40)  # longer than a job id
    monkeypatch.setattr(logsplit, "PIECE", piece)
    monkeypatch.setattr(logfiles, "BATCH_BYTES", 100)


async def test_a_large_body_stores_what_the_whole_parse_stores(client, conn, monkeypatch):
    job_id = await logs_job(client, conn)
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": TEXTS}
    answer = await post_raw(client, json.dumps(body).encode())  # \u escapes
    assert answer == (202, {"message": "Logfiles saved"})
    whole = await stored(conn)
    assert dict((name, text) for name, _, text in whole)["nul.log"] == "before\ufffdafter" * 20
    split_everything(monkeypatch)
    decode, pieces = logsplit._string, []
    monkeypatch.setattr(logsplit, "_string", lambda piece: pieces.append(piece) or decode(piece))
    for encoded in (json.dumps(body).encode(), orjson.dumps(body)):
        await conn.execute("DELETE FROM logfiles")
        assert await post_raw(client, encoded) == answer
        assert await stored(conn) == whole
        assert len(pieces) > 100  # decoded a piece at a time
        pieces.clear()


BODIES = [
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":'
    b'{"a":"%(long)s","a":"%(other)s"}}',  # a duplicate key: the later text
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"%(long)s":"x"}}',
    b'{"simulation_id":"%(long)s","update_key":"%(key)s","logfiles":{"a":"x"}}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":["%(long)s"]}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s\x01"}}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s\\ud800"}}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s\xff"}}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s"}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s}}',
    b'{"simulation_id":"%(job)s","update_key":"%(key)s","logfiles":{"a":"%(long)s"},}',
]

STATUSES = [202, 202, 404, 400, 400, 400, 400, 400, 400, 400]


@pytest.mark.parametrize("number", range(len(BODIES)))
async def test_bodies_the_pieces_cannot_stand_for_answer_as_parsed_whole(
    client, conn, monkeypatch, number
):
    job_id = await logs_job(client, conn)
    values = {"job": job_id, "key": KEY, "long": "é\\n\\\\" * 30, "other": "second"}
    body = BODIES[number] % {name.encode(): value.encode() for name, value in values.items()}
    whole = await post_raw(client, body), await stored(conn)
    await conn.execute("DELETE FROM logfiles")
    split_everything(monkeypatch)
    assert (await post_raw(client, body), await stored(conn)) == whole
    assert whole[0][0] == STATUSES[number]


async def test_other_requests_are_answered_while_a_long_text_is_decoded(client, conn, monkeypatch):
    """Each piece takes 3 ms here (a stand-in for a megabyte's decoding): a `GET /` sent at the
    first piece is answered before the last one."""
    job_id = await logs_job(client, conn)
    split_everything(monkeypatch, piece=100)
    decode, other, done_at = logsplit._string, [], []

    def slow_decode(piece: bytes) -> str:
        if not other:
            other.append(asyncio.ensure_future(client.get("/")))
        time.sleep(0.003)  # the event loop held, as by a megabyte of log text
        done_at.append(other[0].done())
        return decode(piece)

    monkeypatch.setattr(logsplit, "_string", slow_decode)
    text = "line of a log\n" * 1000
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": {"run.log": text}}
    assert await post_raw(client, orjson.dumps(body)) == (202, {"message": "Logfiles saved"})
    assert (await other[0]).status == 200
    assert len(done_at) > 100 and done_at[-1], "GET / was answered only after the last piece"
    assert await stored(conn) == [("run.log", 0, text)]


async def test_parts_stored_a_batch_at_a_time_are_one_transaction(
    aiohttp_client, make_config, conn, monkeypatch
):
    """Over the quota after several batches of parts: 413, and none of them is stored."""
    monkeypatch.setattr(logfiles, "BATCH_BYTES", 1)  # a statement per part
    client = await aiohttp_client(create_app(make_config(jobs={"user_quota": 3 << 20})))
    job_id = await logs_job(client, conn)
    keep = {"simulation_id": job_id, "update_key": KEY, "logfiles": {"keep": "k"}}
    assert (await post_raw(client, orjson.dumps(keep)))[0] == 202
    files = {"a": "x" * (2 * logfiles.PART + 5), "b": "y" * logfiles.PART}
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": files}
    status, answer = await post_raw(client, orjson.dumps(body))
    assert status == 413 and answer["message"].startswith("Storage quota exceeded")
    assert await stored(conn) == [("keep", 0, "k")]
    files = {"a": "x" * (logfiles.PART + 5), "b": "y"}
    body = {"simulation_id": job_id, "update_key": KEY, "logfiles": files}
    assert await post_raw(client, orjson.dumps(body)) == (202, {"message": "Logfiles saved"})
    assert await stored(conn) == [
        ("a", 0, "x" * logfiles.PART),
        ("a", 1, "xxxxx"),
        ("b", 0, "y"),
        ("keep", 0, "k"),
    ]
