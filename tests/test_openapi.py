"""The OpenAPI document: it covers exactly the app's routes, and the live server keeps it.

The fuzzing test runs schemathesis against a real server (its own thread and event loop, the test
database, run.py's connection settings) with a logged-in user's cookie and a real simulation's
update key wired into the generated requests, and asserts, for every operation: no 5xx, JSON
error bodies, documented status codes and response bodies that match their schemas.

Examples per operation: YAPTIDE_FUZZ_EXAMPLES (default 100, about a minute in all). A longer run:
    YAPTIDE_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest tests/test_openapi.py -k fuzz
"""

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server import openapi
from server.app import create_app
from server.config import Config
from server.handlers.meta import VERSION
from server.limits.serving import handler_settings
from server.openapi.schemas import MESSAGE
from tests.helpers import KEY, login, payload, record_jobs, set_key, upload

EXAMPLES = int(os.environ.get("YAPTIDE_FUZZ_EXAMPLES", "100"))
USER = {"username": "fuzzer", "password": "fuzzer-password"}
CHANCE = random.Random(12)  # which requests are left unwired, the same each run


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


async def test_every_route_is_documented_and_nothing_else(client) -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    document = openapi.document(VERSION)
    assert routes == documented(document)
    response = await client.get("/openapi.json")
    assert (response.status, await response.json()) == (200, document)


@contextlib.contextmanager
def live_server(app: web.Application, config: Config) -> Iterator[str]:
    """`app` served on a free port by its own thread and event loop; its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, **handler_settings(config))
    ready = threading.Event()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    address = runner.addresses[0]
    try:
        yield f"http://{address[0]}:{address[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def simulation(base: str, session: requests.Session) -> str:
    """A user logged in on `session` (its cookies) with one submitted simulation; its job_id."""
    session.put(f"{base}/auth/register", json=USER).raise_for_status()
    session.post(f"{base}/auth/login", json=USER).raise_for_status()
    response = session.post(f"{base}/jobs/direct", json=payload())
    response.raise_for_status()
    return response.json()["job_id"]


def wire(case: Any, job_id: str, key: str) -> None:
    """Most generated requests name the real simulation, and worker bodies carry its key, so
    that fuzzing reaches past the ownership and key checks."""
    if CHANCE.random() < 0.2:
        return
    if isinstance(case.query, dict) and "job_id" in case.query:
        case.query["job_id"] = job_id
    if isinstance(case.body, dict) and case.path in ("/tasks", "/jobs", "/results", "/logfiles"):
        case.body.update(simulation_id=job_id, update_key=key)


@pytest.fixture
def fuzz_target(make_config: Callable[..., Config], conn) -> Iterator[tuple[str, Any, dict]]:
    config = make_config(auth={"login_attempts": 1000, "login_address_attempts": 1000})
    app = create_app(config)
    recorder = record_jobs(app)
    with live_server(app, config) as base, requests.Session() as session:
        job_id = simulation(base, session)
        yield base, session, {"job_id": job_id, "key": recorder.key(job_id)}


def test_fuzz_every_operation(fuzz_target) -> None:
    base, session, wired = fuzz_target
    # The document as the live server serves it.
    schema = schemathesis.openapi.from_dict(requests.get(f"{base}/openapi.json").json())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    calls = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented(openapi.document(VERSION)))
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            wire(case, **wired)
            response = case.call(base_url=base, session=session)
            calls.append((case.method, case.path, response.status_code))
            case.validate_response(response, checks=checks)
            if response.status_code >= 400:
                assert set(response.json()) == {"message"}, response.text

        check()
    statuses = {status for _, _, status in calls}
    print(f"schemathesis: {len(calls)} requests, statuses {sorted(statuses)}")
    assert len(calls) >= len(operations)
    assert any(status < 300 for status in statuses)


WORKER_BODIES = {
    "/tasks": {"task_id": 1, "update_dict": {"simulated_primaries": 1}},
    "/results": {"estimators": []},
    "/logfiles": {"logfiles": {"a": "b"}},
    "/jobs": {"job_state": "MERGING_QUEUED"},
}


def request_schema(path: str, method: str = "post") -> Any:
    """A validator of the request body the document gives `method` `path`."""
    content = openapi.document(VERSION)["paths"][path][method]["requestBody"]["content"]
    return jsonschema_rs.validator_for(content["application/json"]["schema"])


@pytest.mark.parametrize("path", sorted(WORKER_BODIES))
async def test_what_the_document_requires_of_worker_bodies_is_required(worker, path) -> None:
    """Each field of a worker's body left out in turn: the document's schema refuses the body
    and so does the server (400 naming the field). The update key is not required by the
    document: it may come in the Authorization header."""
    client, _, identity = worker
    schema = request_schema(path)
    assert schema.is_valid({"simulation_id": "x", **WORKER_BODIES[path]})
    for field in WORKER_BODIES[path]:
        body = {**identity, **WORKER_BODIES[path]}
        del body[field]
        assert not schema.is_valid(body), field
        response = await client.post(path, json=body)
        answer = await response.json()
        assert response.status == 400 and answer["message"].startswith(f"Missing field: {field}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Nothing to update"),
        ({"field": "value"}, "Unknown field: field"),
    ],
)
async def test_profile_updates_the_document_refuses_are_400(client, conn, body, message) -> None:
    await login(client)
    assert not request_schema("/user/update").is_valid(body)
    response = await client.post("/user/update", json=body)
    answer = await response.json()
    assert response.status == 400 and answer["message"].startswith(message)


async def test_the_ui_dialects_answers_are_the_documents(client, conn) -> None:
    """Each answer the dialect reshapes, for a simulation with a task RUNNING (an estimated
    time) and results, is what the document says of it (not only `{"message"}`)."""
    await login(client)
    job_id = (await (await client.post("/ui/jobs/direct", json=payload())).json())["job_id"]
    await set_key(conn, job_id)
    update = {"task_state": "RUNNING", "estimated_time": 4000}
    body = {"simulation_id": job_id, "update_key": KEY, "task_id": 1, "update_dict": update}
    assert (await client.post("/tasks", json=body)).status == 202
    assert (await upload(client, job_id)).status == 202
    document = openapi.document(VERSION, "/ui")
    job = f"job_id={job_id}"
    for path, query in [
        ("/ui/jobs/direct", job),
        ("/ui/jobs", job),
        ("/ui/user/simulations", "page_size=5"),
        ("/ui/inputs", job),
        ("/ui/estimators", job),
        ("/ui/results", job),
        ("/ui/results", f"{job}&estimator_name=z_profile"),
        ("/ui/results", f"{job}&estimator_name=z_profile&page_number=0"),
        ("/ui/results", f"{job}&estimator_name=z_profile&page_number=99"),
    ]:
        response = await client.get(f"{path}?{query}")
        answers = document["paths"][path]["get"]["responses"]
        schema = answers[str(response.status)]["content"]["application/json"]["schema"]
        answer = await response.json()
        assert response.status == 200 and schema != MESSAGE, (path, query)
        assert jsonschema_rs.validator_for(schema).is_valid(answer), (path, query, answer)


def parameter_schema(path: str, name: str) -> Any:
    """A validator of the query parameter `name` of `GET path` as the document gives it."""
    (found,) = [
        parameter["schema"]
        for parameter in openapi.document(VERSION)["paths"][path]["get"]["parameters"]
        if parameter["name"] == name
    ]
    return jsonschema_rs.validator_for(found)


LONG_TITLE = "t" * 1000
# (path, the body's changed fields, accepted): on each side of the server's limits, the
# document's schema and the server agree (it described none of them).
BODIES = [
    ("/auth/register", {"username": "ab"}, False),
    ("/auth/register", {"username": "a b c"}, False),
    ("/auth/register", {"username": "a" * 65}, False),
    ("/auth/register", {"username": "a.b-c_9"}, True),
    ("/auth/register", {"password": "7-chars"}, False),
    ("/auth/register", {"password": "8--chars"}, True),
    ("/jobs/direct", {"ntasks": 0}, False),
    ("/jobs/direct", {"ntasks": 1}, True),
    ("/jobs/direct", {"title": LONG_TITLE + "t"}, False),
    ("/jobs/direct", {"title": LONG_TITLE}, True),
    ("/jobs/direct", {"title": "a\0b"}, False),
    ("/jobs/direct", {"number_of_primaries": -1}, False),
    ("/jobs/direct", {"number_of_primaries": 2**63}, False),
    ("/jobs/direct", {"number_of_primaries": 2**63 - 1}, True),
    ("/user/update", {"display_name": "d" * 129}, False),
    ("/user/update", {"display_name": "d" * 128}, True),
    ("/user/update", {"email": "no-at-sign"}, False),
    ("/user/update", {"email": "a@b"}, True),
    ("/user/update", {"password": "a-new-password"}, False),
    ("/user/update", {"password": "short", "current_password": "x"}, False),
]


@pytest.mark.parametrize(("path", "changes", "accepted"), BODIES)
async def test_the_documents_bodies_have_the_servers_limits(
    client, conn, path, changes, accepted
) -> None:
    method = {"/auth/register": "put"}.get(path, "post")
    body = {
        "/auth/register": {"username": "newcomer", "password": "long-enough"},
        "/jobs/direct": payload(),
        "/user/update": {},
    }[path] | changes
    await login(client)
    assert request_schema(path, method).is_valid(body) == accepted
    response = await client.request(method.upper(), path, json=body)
    assert (response.status < 300) == accepted, await response.text()


UPDATES = [
    ({"task_id": 0}, False),
    ({"task_id": 2**31}, False),
    ({"task_id": 1}, True),
    ({"update_dict": {"simulated_primaries": -1}}, False),
    ({"update_dict": {"requested_primaries": 2**63}}, False),
    ({"update_dict": {"estimated_time": -1}}, False),
    ({"update_dict": {"estimated_time": 2**31}}, False),
    ({"update_dict": {"estimated_time": 2.5}}, True),
    ({"simulation_id": ""}, False),
    ({"simulation_id": "a\0b"}, False),
]


@pytest.mark.parametrize(("changes", "accepted"), UPDATES)
async def test_the_documents_task_updates_have_the_servers_limits(
    worker, changes, accepted
) -> None:
    client, _, identity = worker
    body = {**identity, "task_id": 1, "update_dict": {"simulated_primaries": 1}} | changes
    assert request_schema("/tasks").is_valid(body) == accepted
    response = await client.post("/tasks", json=body)
    assert (response.status == 202) == accepted, await response.text()


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("page_size", 0, False),
        ("page_size", 101, False),
        ("page_size", 100, True),
        ("page_idx", 0, False),
        ("page_idx", 1, True),
        ("job_state", "", False),
        ("job_state", "COMPLETED,", False),
        ("job_state", "COMPLETED,FAILED", True),
    ],
)
async def test_the_documents_listing_parameters_have_the_servers_limits(
    client, conn, name, value, accepted
) -> None:
    await login(client)
    assert parameter_schema("/user/simulations", name).is_valid(value) == accepted
    response = await client.get("/user/simulations", params={name: str(value)})
    assert (response.status == 200) == accepted, await response.text()


@pytest.mark.parametrize(
    ("pages", "accepted"),
    [
        ([{}], False),
        ([{"page_number": -1}], False),
        ([{"metadata": {}}], False),
        ([{"metadata": {"page_number": 2}}], True),
        ([{"metadata": {"page_number": " 7"}}], True),
        ([{"metadata": {"page_number": "-1"}}], False),
        ([{"metadata": {"page_number": "2000000000"}}], True),
        ([{"metadata": {"page_number": "-0"}}], True),
        ([{"metadata": {"page_number": "seven"}}], False),
        ([{"page_number": "seven", "metadata": {"page_number": 1}}], False),
        ([{"page_number": 0, "data": {"values": [1.5]}}], True),
    ],
)
async def test_the_documents_uploads_have_the_servers_limits(worker, pages, accepted) -> None:
    client, _, identity = worker
    body = {**identity, "estimators": [{"name": "dose_", "pages": pages}]}
    assert request_schema("/results").is_valid(body) == accepted
    response = await client.post("/results", json=body)
    assert (response.status == 202) == accepted, await response.text()


@pytest.mark.parametrize(
    ("name", "accepted"), [("", False), ("a\0b", False), ("n" * 256, False), ("n" * 255, True)]
)
async def test_the_documents_log_files_have_the_servers_limits(worker, name, accepted) -> None:
    client, _, identity = worker
    body = {**identity, "logfiles": {name: "text"}}
    assert request_schema("/logfiles").is_valid(body) == accepted
    response = await client.post("/logfiles", json=body)
    assert (response.status == 202) == accepted, await response.text()


async def test_a_worker_may_send_its_key_either_way(worker) -> None:
    """The document said no more than "no security" of the worker routes."""
    client, _, identity = worker
    document = openapi.document(VERSION)
    assert document["paths"]["/tasks"]["post"]["security"] == [{"updateKey": []}, {}]
    scheme = document["components"]["securitySchemes"]["updateKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    body = {"simulation_id": identity["simulation_id"], "task_id": 1, "update_dict": {}}
    bearer = {"Authorization": f"Bearer {identity['update_key']}"}
    assert request_schema("/tasks").is_valid(body)
    assert (await client.post("/tasks", json=body, headers=bearer)).status == 202
