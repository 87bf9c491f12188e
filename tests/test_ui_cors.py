"""CORS with credentials for `[ui] allowed_origins`, on the main API and the UI dialect."""

import asyncio

import orjson
import pytest

from server.app import create_app
from tests.helpers import login, payload, register, set_key, submit, upload

ORIGIN = "http://ui.example.org:3000"
OTHER = "https://evil.example.com"
# Every (path, method) the UI calls, under the dialect, and some of the main API.
UI_CALLS = [
    ("/ui/", "GET"),
    ("/ui/auth/login", "POST"),
    ("/ui/auth/refresh", "GET"),
    ("/ui/auth/logout", "DELETE"),
    ("/ui/auth/keycloak", "POST"),
    ("/ui/jobs/direct", "POST"),
    ("/ui/jobs/direct", "GET"),
    ("/ui/jobs/direct", "DELETE"),
    ("/ui/user/simulations", "GET"),
    ("/ui/user/simulations", "DELETE"),
    ("/ui/inputs", "GET"),
    ("/ui/estimators", "GET"),
    ("/ui/results", "GET"),
    ("/ui/logfiles", "GET"),
]
MAIN_CALLS = [
    ("/", "GET"),
    ("/auth/register", "PUT"),
    ("/jobs/direct", "DELETE"),
    ("/jobs", "POST"),
    ("/auth/login", "POST"),
    ("/jobs/direct", "POST"),
    ("/user/simulations", "DELETE"),
    ("/results", "GET"),
    ("/user/update", "POST"),
]


@pytest.fixture
async def cors_client(aiohttp_client, make_config, conn):
    config = make_config(ui={"allowed_origins": f"{ORIGIN}, http://localhost:3000"})
    return await aiohttp_client(create_app(config))


def preflight_headers(origin: str, method: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type",
    }


@pytest.mark.parametrize(("path", "method"), UI_CALLS + MAIN_CALLS)
async def test_preflight_of_every_call(cors_client, path, method):
    response = await cors_client.options(path, headers=preflight_headers(ORIGIN, method))
    assert response.status == 200
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == method
    assert headers["Access-Control-Allow-Headers"].lower() == "content-type"
    assert headers["Vary"] == "Origin"


async def test_preflight_of_a_disallowed_origin_or_header(cors_client):
    refused = [
        preflight_headers(OTHER, "GET"),
        {**preflight_headers(ORIGIN, "GET"), "Access-Control-Request-Headers": "x-secret"},
        {"Access-Control-Request-Method": "GET"},  # no Origin: not a CORS preflight
    ]
    for headers in refused:
        response = await cors_client.options("/ui/inputs", headers=headers)
        assert response.status == 403
        assert orjson.loads(await response.read()) == {"message": "Forbidden"}
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("path", [b"/ui/inputs", b"/jobs/direct"])
async def test_preflight_naming_a_header_that_is_not_utf8_is_403(cors_client, path):
    """aiohttp-cors quotes the refused headers in its 403; bytes that are not UTF-8 (lone
    surrogates in aiohttp) made that 403 a 500 with a traceback logged."""
    reader, writer = await asyncio.open_connection(cors_client.host, cors_client.port)
    writer.write(
        b"OPTIONS " + path + b" HTTP/1.1\r\nHost: x\r\nOrigin: " + ORIGIN.encode() + b"\r\n"
        b"Access-Control-Request-Method: POST\r\n"
        b"Access-Control-Request-Headers: content-type, x-\xff\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert answer.endswith(b'{"message":"Forbidden"}'), answer
    assert b"Access-Control-Allow-Origin" not in answer


async def test_allowed_origin_with_credentials(cors_client):
    headers = {"Origin": ORIGIN}
    body = {"username": "alice", "password": "password1"}
    response = await cors_client.put("/auth/register", json=body, headers=headers)
    assert response.status == 201
    response = await cors_client.post("/ui/auth/login", json=body, headers=headers)
    assert response.status == 202
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Vary"] == "Origin"
    assert set(response.cookies) == {"access_token", "refresh_token"}
    response = await cors_client.get("/ui/user/simulations", headers=headers)
    assert response.status == 200  # the cookies came back
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    # Errors are readable cross-origin too: the UI shows their message.
    response = await cors_client.get("/ui/inputs", headers=headers)
    assert (response.status, response.headers["Access-Control-Allow-Origin"]) == (400, ORIGIN)


async def test_other_origins_get_no_cors_headers(cors_client):
    for path in ("/ui/", "/"):
        response = await cors_client.get(path, headers={"Origin": OTHER})
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert response.headers["Vary"] == "Origin"


async def test_vary_keeps_accept_encoding(cors_client, conn):
    await login(cors_client)
    job_id = await submit(cors_client)
    await set_key(conn, job_id)
    assert (await upload(cors_client, job_id)).status == 202
    for path in (f"/results?job_id={job_id}", f"/ui/results?job_id={job_id}&estimator_name=peak"):
        response = await cors_client.get(path, headers={"Origin": ORIGIN})
        assert response.status == 200
        assert response.headers["Vary"] == "Accept-Encoding, Origin"
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_no_origins_configured_means_no_cors(client):
    response = await client.options("/ui/inputs", headers=preflight_headers(ORIGIN, "GET"))
    assert response.status == 405
    assert orjson.loads(await response.read()) == {"message": "Method not allowed"}
    response = await client.get("/ui/", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Vary" not in response.headers


async def test_preflight_with_the_keycloak_bearer_header(cors_client):
    headers = {
        **preflight_headers(ORIGIN, "POST"),
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = await cors_client.options("/ui/auth/keycloak", headers=headers)
    assert response.status == 200
    allowed = set(response.headers["Access-Control-Allow-Headers"].lower().split(","))
    assert allowed == {"authorization", "content-type"}


async def test_a_method_the_path_lacks_passes_the_preflight_then_gets_405(cors_client):
    response = await cors_client.options("/ui/inputs", headers=preflight_headers(ORIGIN, "PUT"))
    assert response.status == 200
    response = await cors_client.put("/ui/inputs", headers={"Origin": ORIGIN})
    assert orjson.loads(await response.read()) == {"message": "Method not allowed"}
    assert response.status == 405
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/no/such/path", 404, "Not found"),
        ("GET", "/ui/no/such/path", 404, "Not found"),
        ("PUT", "/results", 405, "Method not allowed"),
        ("PUT", "/ui/results", 405, "Method not allowed"),
    ],
)
async def test_aiohttps_own_404_and_405_are_readable_by_allowed_origins_only(
    cors_client, method, path, status, message
):
    """aiohttp-cors decorates the routes it knows; a path or method without a route still
    tells the UI why, with the same headers (and nothing for another origin)."""
    response = await cors_client.request(method, path, headers={"Origin": ORIGIN})
    assert (response.status, orjson.loads(await response.read())) == (status, {"message": message})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Vary"] == "Origin"
    response = await cors_client.request(method, path, headers={"Origin": OTHER})
    assert response.status == status
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "multipart/form-data", None])
async def test_posts_a_form_could_send_change_nothing(
    aiohttp_client, make_config, conn, content_type
) -> None:
    """A page of another origin can POST without asking first (no CORS preflight) when its body
    is one a form could send: no Content-Type, text/plain, a form encoding. The browser adds the
    user's cookies (SameSite=None, or Lax from the same site), so such a body changes nothing,
    whatever CORS allows (cross-site request forgery; login CSRF too)."""
    config = make_config(
        auth={"secure_cookies": True, "cookie_samesite": "None"},
        ui={"allowed_origins": ORIGIN},
    )
    client = await aiohttp_client(create_app(config))
    await register(client)
    user = {"username": "alice", "password": "password1"}
    login_response = await client.post("/auth/login", json=user)
    token = login_response.cookies["access_token"].value
    headers = {"Origin": OTHER, "Cookie": f"access_token={token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    skip = () if content_type is not None else ("Content-Type",)
    simulation = orjson.dumps(payload())
    answers = [
        await client.post(path, data=body, headers=headers, skip_auto_headers=skip)
        for path, body in [
            ("/jobs/direct", simulation),
            ("/ui/jobs/direct", simulation),
            ("/user/update", b'{"email": "mallory@evil.example"}'),
            ("/auth/login", orjson.dumps(user)),
        ]
    ]
    statuses = [(answer.status, await answer.json()) for answer in answers]
    assert statuses == [(415, {"message": "Content-Type must be application/json"})] * 4
    assert all("Set-Cookie" not in answer.headers for answer in answers)
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
    assert await conn.fetchval("SELECT email FROM users") is None
