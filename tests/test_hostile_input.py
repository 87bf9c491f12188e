"""NUL characters, numbers out of range, a file name ending in a newline and odd token subjects
each get a 4xx JSON answer, and nothing is stored."""

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from server.keys import SECRET
from tests.helpers import KEY, login, payload, raw_results_body, set_key, status, submit

MAX_INT64 = 2**63 - 1
NUL = "Invalid {}: must not contain NUL characters"
BAD_PAGE_NUMBER = "Invalid page_number: must be a non-negative integer"
FILES_PAYLOAD = payload()
EDITOR = payload("json_payload_editor.json")
FLUKA = payload("fluka_json_payload_files.json")
DIGITS_5000 = "9" * 5000


def with_file(base: dict[str, Any], name: str, text: str) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body.pop("title", None)
    body["input_files"][name] = text
    return body


def editor(**changes: Any) -> dict[str, Any]:
    """The editor fixture with `section.key` values changed in its project JSON."""
    body = copy.deepcopy(EDITOR)
    body.pop("title")
    for path, value in changes.items():
        section, key = path.split("__")
        body["input_json"][section][key] = value
    return body


def page(number: Any, name: str = "dose") -> dict[str, Any]:
    return {"metadata": {"page_number": number, "name": name}, "data": {"values": [1.0]}}


# (what is sent to POST /jobs/direct, the message of the 400)
SUBMISSIONS = [
    ({**FILES_PAYLOAD, "title": "a\0b"}, NUL.format("title")),
    (editor(project__title="a\0b"), NUL.format("project.title")),
    (
        {**FILES_PAYLOAD, "number_of_primaries": 2**63},
        f"Invalid number_of_primaries: at most {MAX_INT64}",
    ),
    (
        editor(beam__numberOfParticles=2**63),
        f"Invalid beam.numberOfParticles: must be between 0 and {MAX_INT64} primaries",
    ),
    *(  # (each was "beam: the number of primaries per task must be at least 1")
        (
            editor(beam__numberOfParticles=count),
            "Invalid beam.numberOfParticles: must be a whole number of 1 or more "
            f"(got {count!r}; or give number_of_primaries)",
        )
        for count in (100.5, "100", 0, -3, True)
    ),
    (
        with_file(FILES_PAYLOAD, "beam.dat", "NSTAT 99999999999999999999\n"),
        f"Invalid primaries in beam.dat: must be between 0 and {MAX_INT64} primaries",
    ),
    (
        with_file(FLUKA, "fl_sim.inp", "START 1e999\n"),
        f"Invalid primaries in fl_sim.inp: must be between 0 and {MAX_INT64} primaries",
    ),
    (
        with_file(FLUKA, "fl_sim.inp", "START .\n"),
        "Invalid fl_sim.inp: '.' is not a number of primaries",
    ),
    (with_file(FILES_PAYLOAD, "beam.dat\n", "NSTAT 1\n"), "Invalid file name: 'beam.dat\\n'"),
]


@pytest.mark.parametrize(("body", "message"), SUBMISSIONS)
async def test_submission_rejected(client, conn, body: dict[str, Any], message: str) -> None:
    await login(client)
    response = await client.post("/jobs/direct", data=orjson.dumps(body))
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"username": "a\0b", "password": "password1"}, NUL.format("username")),
        ({"username": "alice", "password": "pass\0word"}, NUL.format("password")),
    ],
)
async def test_login_with_nul_is_400(client, body: dict[str, str], message: str) -> None:
    response = await client.post("/auth/login", json=body)
    assert (response.status, await response.json()) == (400, {"message": message})


async def test_profile_with_nul_is_400(client, conn) -> None:
    await login(client)
    response = await client.post("/user/update", json={"display_name": "a\0b"})
    assert (response.status, await response.json()) == (
        400,
        {"message": NUL.format("display_name")},
    )
    assert await conn.fetchval("SELECT display_name FROM users") is None


# (query string after ?job_id=<a real job>, the message of the 400); None: no job_id at all
QUERIES = [
    ("job_id=%00", NUL.format("job_id")),
    ("estimator_name=%00", NUL.format("estimator_name")),
    ("page_number=%C2%B2", BAD_PAGE_NUMBER),  # "²": str.isdigit() says yes, int() says no
    ("page_number=%EF%BC%91", BAD_PAGE_NUMBER),  # a full-width 1 (U+FF11)
    (f"page_number={DIGITS_5000}", BAD_PAGE_NUMBER),
    (
        f"page_numbers={DIGITS_5000}",
        f"Invalid page_numbers: {DIGITS_5000!r} is not a number or a range like 1-3",
    ),
]


@pytest.mark.parametrize(("query", "message"), QUERIES)
async def test_results_query_rejected(client, query: str, message: str) -> None:
    await login(client)
    job_id = await submit(client)
    if query.startswith("job_id="):
        url = f"/results?{query}"
    else:
        url = f"/results?job_id={job_id}&{query}"
    response = await client.get(url)
    assert (response.status, await response.json()) == (400, {"message": message})


BAD_PAGE = "Invalid page in estimator 'z': no integer page_number"
# (estimators of a POST /results, the message of the 400)
UPLOADS = [
    ([{"name": "a\0", "pages": [page(1)]}], NUL.format("estimators[0].name")),
    ([{"name": "z", "pages": [page(1, "a\0b")]}], NUL.format("page name")),
    (
        [{"name": "z" * 1_000_000, "pages": [page(1)]}],
        "Invalid estimators[0].name: at most 255 characters",
    ),
    ([{"name": "z", "pages": [page("--1")]}], BAD_PAGE),
    ([{"name": "z", "pages": [page("²")]}], BAD_PAGE),
    ([{"name": "z", "pages": [page(DIGITS_5000)]}], BAD_PAGE),
]


@pytest.mark.parametrize(("estimators", "message"), UPLOADS)
async def test_upload_rejected(client, conn, estimators: list, message: str) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": estimators}
    response = await client.post("/results", data=orjson.dumps(body))
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"task_id": 1, "update_dict": {"start_time": "0001-01-01T00:00:00+14:00"}},
            "Invalid update_dict.start_time: out of range once in UTC",
        ),
        ({"simulation_id": "\0", "task_id": 1, "update_dict": {}}, NUL.format("simulation_id")),
    ],
)
async def test_task_update_rejected(client, conn, body: dict[str, Any], message: str) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    sent = {"simulation_id": job_id, "update_key": KEY, **body}
    response = await client.post("/tasks", data=orjson.dumps(sent))
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") == 0


def signed(client, **claims: Any) -> str:
    """A token signed with the server's own secret, with the given claims and an hour to live."""
    secret = client.server.app[SECRET]
    return jwt.encode({"exp": int(time.time()) + 3600, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("cookie", "path", "claims"),
    [
        ("access_token", "/auth/status", {"sub": "²", "type": "access"}),
        ("access_token", "/auth/status", {"sub": "9" * 30, "type": "access"}),
        ("access_token", "/auth/status", {"sub": "\uff11", "type": "access"}),  # a full-width 1
        ("access_token", "/auth/status", {"sub": 1, "type": "access"}),
        ("refresh_token", "/auth/refresh", {"sub": "1", "type": "refresh"}),  # no jti
        ("refresh_token", "/auth/refresh", {"sub": "1", "type": "refresh", "jti": 5}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "gen": "0"}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "gen": True}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "sid": ["a"]}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "sid": {"a": 1}}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "sid": "zz"}),
        ("access_token", "/auth/status", {"sub": "1", "type": "access", "sid": "ab" * 17}),
    ],
)
async def test_odd_token_claims_are_401(client, cookie: str, path: str, claims: dict) -> None:
    await login(client)  # user 1 exists: a full-width 1 must not be taken for it
    client.session.cookie_jar.clear()
    token = signed(client, **claims)
    response = await client.get(path, headers={"Cookie": f"{cookie}={token}"})
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )


@pytest.mark.parametrize("sid", ["zz", "ab" * 17, "\u00e9" * 32])
async def test_a_logout_with_an_odd_session_id_ends_nothing(client, conn, sid: str) -> None:
    """A logout ends the session its access cookie names: one that names no session id the
    server writes is ignored, not a 500."""
    await login(client)
    client.session.cookie_jar.clear()
    token = signed(client, sub="1", type="access", sid=sid)
    response = await client.delete("/auth/logout", headers={"Cookie": f"access_token={token}"})
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    assert await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 1


def deeply_nested(depth: int) -> bytes:
    """A JSON array nested `depth` levels (orjson reads up to 1024, writes up to 254)."""
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            b'{"name": "z", "pages": [{"page_number": 1, "data": {"values": %s}}]}',
            "Invalid page in estimator 'z': nested too deeply",
        ),
        (
            b'{"name": "z", "metadata": %s, "pages": []}',
            "Invalid estimator 'z': nested too deeply",
        ),
    ],
)
async def test_deeply_nested_upload_is_400(client, conn, estimator: bytes, message: str) -> None:
    """Deep enough for orjson to read it but too deep for it to write it back: a 400, not a
    500, and nothing stored."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimators = estimator % deeply_nested(300)
    body = raw_results_body(job_id, estimators)
    response = await client.post("/results", data=body)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


@pytest.mark.parametrize(("depth", "status"), [(251, 202), (252, 400), (300, 400)])
async def test_an_input_too_deep_to_be_sent_back_is_400(
    client, conn, depth: int, status: int
) -> None:
    """An editor project orjson reads but could not write back (nested deeper than 254 levels
    in the answers that hold it: the UI dialect's `GET /inputs` sends it two levels down) is a
    400 at submission, with nothing stored; what is accepted is served in every form."""
    await login(client)
    body = editor()
    body["input_json"]["extra"] = "deep"  # spliced in: too deep for orjson to write here
    raw = orjson.dumps(body).replace(b'"extra":"deep"', b'"extra":' + deeply_nested(depth))
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=raw, headers=headers)
    if status == 400:
        message = {"message": "Invalid input: nested too deeply"}
        assert (response.status, await response.json()) == (400, message)
        assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
        return
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    for path in ("/inputs", "/ui/inputs"):
        answer = await client.get(path, params={"job_id": job_id})
        assert answer.status == 200, (path, await answer.text())


def test_a_beam_file_of_blank_lines_is_read_in_linear_time():
    """Where the primaries of a submission are looked for (NSTAT in beam.dat): in a process of
    its own, killed after 30 s. A pattern whose blanks could span lines took time growing with
    the square of the blank lines, on the event loop (40,000 took 8 s)."""
    code = (
        "from server.jobs.submission import _default_primaries as p; "
        "print(p('files', {'beam.dat': '\\n' * 1_000_000 + 'END\\n'}))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, cwd=root, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"0\n", b"")


@pytest.mark.parametrize(
    ("base", "name", "text"),
    [
        # A START card without its value: the next card's E (EMFCUT) was taken for it, and a
        # valid input refused ("'E' is not a number of primaries").
        (FLUKA, "fl_sim.inp", "TITLE\nx\nSTART\nEMFCUT        -1.0\nSTOP\n"),
        # Other scripts' digits, which SHIELD-HIT12A cannot read, are no count of primaries.
        (FILES_PAYLOAD, "beam.dat", "NSTAT \u0661\u0660\u0660\n"),
    ],
)
async def test_primaries_are_read_only_from_their_own_line_in_ascii_digits(
    client, base: dict[str, Any], name: str, text: str
) -> None:
    await login(client)
    response = await client.post("/jobs/direct", json=with_file(base, name, text))
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    tasks = (await status(client, job_id))["job_tasks_status"]
    assert [task["requested_primaries"] for task in tasks] == [0] * len(tasks)
