"""The web UI's dialect under `/ui`: every call of shared/spec/ui-client.md's table, sent as the
UI sends it, with the whole response compared."""

import gzip
import time
import uuid

import orjson
import pytest

from server.store import inputs as stored_inputs
from server.ui import shapes
from tests.editor_projects import detector, example, output, quantity
from tests.helpers import (
    EDITOR,
    KEY,
    RESULTS,
    SHIELDHIT_FILES,
    add_logfiles,
    login,
    page_number,
    payload,
    register,
    set_key,
    set_simulation,
    upload,
    utc,
)

UI = "/ui"
ALL_STATES = "PENDING,RUNNING,MERGING_QUEUED,MERGING_RUNNING,COMPLETED,FAILED,CANCELED"
LIST = f"{UI}/user/simulations?page_idx=1&page_size=10&order_type=descend&order_by=start_time"


async def body_of(response) -> tuple[int, dict]:
    return response.status, orjson.loads(await response.read())


async def ui_submit(client, name: str = SHIELDHIT_FILES) -> str:
    """Submit as the UI does: input_json or input_files, input_type, ntasks, sim_type, title."""
    response = await client.post(f"{UI}/jobs/direct", json=payload(name))
    status, body = await body_of(response)
    assert status == 202 and body == {"message": "Job submitted", "job_id": body["job_id"]}
    assert uuid.UUID(body["job_id"])
    return body["job_id"]


async def report(client, job_id: str, task_id: int, **update) -> None:
    body = {"simulation_id": job_id, "task_id": task_id, "update_key": KEY, "update_dict": update}
    response = await client.post("/tasks", json=body)
    assert response.status == 202, await response.text()


async def test_liveness(client, conn):
    main = await body_of(await client.get("/"))
    assert await body_of(await client.get(f"{UI}/")) == main
    assert main[1]["message"] == "Hello World!"


def within(exp_ms: int, ttl: float) -> bool:
    return abs(exp_ms / 1000 - (time.time() + ttl)) < 5


async def test_login_refresh_and_cookies(client, conn):
    await register(client)
    response = await client.post(
        f"{UI}/auth/login", json={"username": "alice", "password": "password1"}
    )
    status, body = await body_of(response)
    assert status == 202
    assert body == {
        "message": "Login successful",
        "access_exp": body["access_exp"],
        "refresh_exp": body["refresh_exp"],
    }
    assert within(body["access_exp"], 900) and within(body["refresh_exp"], 604800)
    for cookie in response.cookies.values():  # one Path for the main API and the dialect
        assert (cookie["path"], cookie["httponly"], cookie["samesite"]) == ("/", True, "Lax")
    status, body = await body_of(await client.get(f"{UI}/auth/refresh"))
    assert status == 200
    assert body == {"message": "Token refreshed", "access_exp": body["access_exp"]}
    assert isinstance(body["access_exp"], int) and within(body["access_exp"], 900)
    # The same cookies work on the main API.
    status, body = await body_of(await client.get("/auth/status"))
    assert (status, body["username"]) == (200, "alice")


async def test_logout_then_refresh_is_silent(client, conn):
    await login(client)
    refresh_token = client.session.cookie_jar.filter_cookies(client.make_url("/"))["refresh_token"]
    response = await client.delete(f"{UI}/auth/logout")
    assert await body_of(response) == (200, {"message": "Logout successful"})
    # The UI refreshes once more after logout: without cookies...
    no_token = (401, {"message": "No token provided"})
    assert await body_of(await client.get(f"{UI}/auth/refresh")) == no_token
    # ... or, racing the logout, with the refresh token it just revoked.
    client.session.cookie_jar.update_cookies({"refresh_token": refresh_token.value})
    response = await client.get(f"{UI}/auth/refresh")
    assert await body_of(response) == no_token
    assert {name: c.value for name, c in response.cookies.items()} == {
        "access_token": "",
        "refresh_token": "",
    }
    assert await body_of(await client.get(LIST)) == no_token


async def test_a_request_racing_the_logout_is_silent(client, conn):
    """The UI fetches the simulation list as it logs out (it forgets the user, then sends the
    logout): that request, sent with the access cookie before the logout's answer cleared it,
    reaches the server after the logout ended its session. Its 401 must be the silent one,
    not a red "Invalid or expired token" snackbar."""
    await login(client)
    access = client.session.cookie_jar.filter_cookies(client.make_url("/"))["access_token"]
    assert (await client.get(LIST)).status == 200
    response = await client.delete(f"{UI}/auth/logout")
    assert await body_of(response) == (200, {"message": "Logout successful"})
    client.session.cookie_jar.update_cookies({"access_token": access.value})
    no_token = (401, {"message": "No token provided"})
    assert await body_of(await client.get(LIST)) == no_token
    # The main API keeps its own message for a logged-out session's token.
    status, body = await body_of(await client.get("/user/simulations"))
    assert (status, body) == (401, {"message": "Invalid or expired token"})


async def test_no_token_is_the_silent_message(client, conn):
    for path in (LIST, f"{UI}/jobs/direct?job_id=x", f"{UI}/results?job_id=x"):
        assert await body_of(await client.get(path)) == (401, {"message": "No token provided"})


async def test_simulation_list_items_carry_metadata_not_state(client, conn):
    await login(client)
    files = await ui_submit(client)
    editor = await ui_submit(client, EDITOR)
    await set_simulation(conn, files, start_time=utc("2024-01-15T10:00:00Z"))
    await set_simulation(
        conn,
        editor,
        start_time=utc("2024-01-16T10:00:00Z"),
        end_time=utc("2024-01-16T11:30:00Z"),
        job_state="COMPLETED",
        platform="batch",
    )
    response = await client.get(f"{LIST}&job_state={ALL_STATES}")
    assert await body_of(response) == (
        200,
        {
            "message": "User simulations",
            "simulations": [
                {
                    "job_id": editor,
                    "title": "Proton pencil beam in water",
                    "start_time": "2024-01-16T10:00:00Z",
                    "end_time": "2024-01-16T11:30:00Z",
                    "metadata": {
                        "platform": "BATCH",
                        "server": "Yaptide",
                        "input_type": "EDITOR",
                        "sim_type": "shieldhit",
                    },
                },
                {
                    "job_id": files,
                    "title": "Proton pencil beam in water",
                    "start_time": "2024-01-15T10:00:00Z",
                    "end_time": None,
                    "metadata": {
                        "platform": "DIRECT",
                        "server": "Yaptide",
                        "input_type": "FILES",
                        "sim_type": "shieldhit",
                    },
                },
            ],
            "page_count": 1,
            "simulations_count": 2,
        },
    )
    response = await client.get(f"{LIST}&job_state=PENDING")
    assert [item["job_id"] for item in (await response.json())["simulations"]] == [files]


async def test_status_with_estimated_time_and_the_list_poll_merge(client, conn):
    await login(client)
    job_id = await ui_submit(client)
    await set_key(conn, job_id)
    await report(
        client,
        job_id,
        2,
        task_state="RUNNING",
        simulated_primaries=300,
        estimated_time=3725,
        start_time="2024-01-15T10:00:00Z",
    )
    status, live = await body_of(await client.get(f"{UI}/jobs/direct?job_id={job_id}"))
    pending = {
        "task_state": "PENDING",
        "simulated_primaries": 0,
        "requested_primaries": 2500,
        "estimated_time": None,
        "start_time": None,
        "end_time": None,
    }
    assert (status, live) == (
        200,
        {
            "message": "Job status",
            "job_state": "RUNNING",
            "job_tasks_status": [
                {"task_id": 1, **pending},
                {
                    "task_id": 2,
                    "task_state": "RUNNING",
                    "simulated_primaries": 300,
                    "requested_primaries": 2500,
                    "estimated_time": {"hours": 1, "minutes": 2, "seconds": 5},
                    "start_time": "2024-01-15T10:00:00Z",
                    "end_time": None,
                },
                {"task_id": 3, **pending},
                {"task_id": 4, **pending},
            ],
        },
    )
    assert await body_of(await client.get(f"{UI}/jobs?job_id={job_id}")) == (200, live)
    # The UI shows {...status, ...item}: the list item must not bring a stale state along.
    item = (await (await client.get(LIST)).json())["simulations"][0]
    assert {**live, **item}["job_state"] == "RUNNING"
    assert "job_state" not in item


async def test_inputs_of_an_editor_project(client, conn):
    await login(client)
    job_id = await ui_submit(client, EDITOR)
    # The files converted at submission, as the main API shows them.
    converted = (await (await client.get(f"/inputs?job_id={job_id}")).json())["input_files"]
    assert sorted(converted) == ["beam.dat", "detect.dat", "geo.dat", "mat.dat"]
    assert await body_of(await client.get(f"{UI}/inputs?job_id={job_id}")) == (
        200,
        {
            "message": "Inputs",
            "input": {
                "input_type": "EDITOR",
                "input_json": payload(EDITOR)["input_json"],  # the whole project, hash included
                "input_files": converted,
                "number_of_all_primaries": 10000,
            },
        },
    )


async def test_inputs_of_files(client, conn):
    await login(client)
    job_id = await ui_submit(client)
    assert await body_of(await client.get(f"{UI}/inputs?job_id={job_id}")) == (
        200,
        {
            "message": "Inputs",
            "input": {
                "input_type": "FILES",
                "input_files": payload(SHIELDHIT_FILES)["input_files"],
                "number_of_all_primaries": 10000,
            },
        },
    )


async def job_with_results(client, conn, name: str = SHIELDHIT_FILES) -> str:
    await login(client)
    job_id = await ui_submit(client, name)
    await set_key(conn, job_id)
    response = await upload(client, job_id)
    assert response.status == 202, await response.text()
    return job_id


async def test_estimators_metadata(client, conn):
    job_id = await job_with_results(client, conn)
    expected = [
        {
            "name": estimator["name"].removesuffix("_"),
            "pages_metadata": [
                {
                    "page_number": page_number(page),
                    "page_name": page["metadata"]["name"],
                    "page_dimension": page["dimensions"],  # pymchelper's own count of axes
                }
                for page in sorted(estimator["pages"], key=page_number)
            ],
        }
        for estimator in RESULTS["estimators"]
    ]
    assert await body_of(await client.get(f"{UI}/estimators?job_id={job_id}")) == (
        200,
        {"message": "Estimators", "estimators_metadata": expected},
    )


def fixture_pages(estimator: str, numbers: list[int]) -> list[dict]:
    pages = next(e["pages"] for e in RESULTS["estimators"] if e["name"] == estimator)
    return sorted((p for p in pages if page_number(p) in numbers), key=page_number)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_results_of_one_estimator_at_the_top_level(client, conn, encoding):
    job_id = await job_with_results(client, conn)
    path = f"{UI}/results?job_id={job_id}&estimator_name=z_profile&page_numbers=0-1,3"
    response = await client.get(path, headers={"Accept-Encoding": encoding})
    assert response.headers.get("Content-Encoding", "identity") == encoding
    assert await body_of(response) == (
        200,
        {"message": "Results", "pages": fixture_pages("z_profile_", [0, 1, 3])},
    )
    path = f"{UI}/results?job_id={job_id}&estimator_name=yz_profile"
    assert await body_of(await client.get(path)) == (
        200,
        {"message": "Results", "pages": fixture_pages("yz_profile_", [0, 1, 2])},
    )


async def test_results_one_page(client, conn):
    job_id = await job_with_results(client, conn)
    path = f"{UI}/results?job_id={job_id}&estimator_name=peak&page_number="
    assert await body_of(await client.get(path + "4")) == (
        200,
        {"message": "Results", "page": fixture_pages("peak_", [4])[0]},
    )
    assert await body_of(await client.get(path + "99")) == (
        200,
        {"message": "Results", "page": None},
    )


async def test_results_of_an_unknown_estimator_or_job(client, conn):
    job_id = await job_with_results(client, conn)
    path = f"{UI}/results?job_id={job_id}&estimator_name=nope&page_numbers=0"
    assert await body_of(await client.get(path)) == (
        404,
        {"message": "Estimator not found: nope"},
    )
    path = f"{UI}/results?job_id=unknown&estimator_name=peak&page_numbers=0"
    assert await body_of(await client.get(path)) == (
        404,
        {"message": "Job with provided ID does not exist"},
    )


async def test_full_results_as_the_main_api(client, conn):
    job_id = await job_with_results(client, conn)
    main = await client.get(f"/results?job_id={job_id}")
    response = await client.get(f"{UI}/results?job_id={job_id}")
    assert response.status == 200
    assert await response.read() == await main.read()


PROJECT_ORDER = ["z_profile", "yz_profile", "entrance", "peak"]  # the editor fixture's outputs


async def test_editor_results_in_the_projects_order(client, conn):
    """The upload's order (yz, entrance, z, peak) is not the project's: the UI pairs
    `outputs[i]` with `estimators[i]`, so the dialect follows the project."""
    job_id = await job_with_results(client, conn, EDITOR)
    assert [o["name"] for o in payload(EDITOR)["input_json"]["scoringManager"]["outputs"]] == (
        PROJECT_ORDER
    )
    status, body = await body_of(await client.get(f"{UI}/estimators?job_id={job_id}"))
    assert status == 200
    assert [e["name"] for e in body["estimators_metadata"]] == PROJECT_ORDER
    by_name = {e["name"]: e for e in RESULTS["estimators"]}
    expected = [  # estimator-level fields (metadata) come back as uploaded
        {**by_name[f"{name}_"], "pages": fixture_pages(f"{name}_", list(range(10)))}
        for name in PROJECT_ORDER
    ]
    assert set(by_name) == {e["name"] for e in expected}
    assert await body_of(await client.get(f"{UI}/results?job_id={job_id}")) == (
        200,
        {"message": "Results", "estimators": expected},
    )


async def test_results_gzip_is_spliced_not_recompressed(client, conn):
    """The dialect's gzip body is the stored segments joined: it decompresses to exactly the
    identity body, member by member, without a recompression pass (one gzip member)."""
    job_id = await job_with_results(client, conn)
    path = f"{UI}/results?job_id={job_id}&estimator_name=yz_profile&page_numbers=0-2"
    plain = await (await client.get(path, headers={"Accept-Encoding": "identity"})).read()
    pages = b",".join(orjson.dumps(page) for page in fixture_pages("yz_profile_", [0, 1, 2]))
    assert plain == b'{"message":"Results","pages":[' + pages + b"]}"
    raw = await client.session.get(
        client.make_url(path), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert gzip.decompress(await raw.read()) == plain


async def test_logfiles(client, conn):
    await login(client)
    job_id = await ui_submit(client)
    logs = {"task_1_stdout": "ok\n", "merge": "failed: no result files"}
    await set_key(conn, job_id)
    await add_logfiles(client, job_id, logs)
    assert await body_of(await client.get(f"{UI}/logfiles?job_id={job_id}")) == (
        200,
        {"message": "Logfiles", "logfiles": dict(sorted(logs.items()))},
    )


async def test_cancel_then_delete_then_poll(client, conn):
    await login(client)
    job_id = await ui_submit(client)
    response = await client.delete(f"{UI}/jobs/direct?job_id={job_id}")
    assert await body_of(response) == (200, {"message": "Job cancelled"})
    status, body = await body_of(await client.get(f"{UI}/jobs/direct?job_id={job_id}"))
    assert (status, body["job_state"]) == (200, "CANCELED")
    response = await client.delete(f"{UI}/user/simulations?job_id={job_id}")
    assert await body_of(response) == (200, {"message": "Simulation deleted"})
    # A poll still in flight after the deletion gets the message the UI does not show.
    gone = (404, {"message": "Job with provided ID does not exist"})
    for path in ("jobs/direct", "inputs", "estimators", "logfiles", "results"):
        assert await body_of(await client.get(f"{UI}/{path}?job_id={job_id}")) == gone
    assert await body_of(await client.get(LIST)) == (
        200,
        {"message": "User simulations", "simulations": [], "page_count": 0, "simulations_count": 0},
    )


async def test_other_errors_keep_their_messages(client, conn):
    await login(client)
    job_id = await ui_submit(client)
    response = await client.delete(f"{UI}/user/simulations?job_id={job_id}")
    assert await body_of(response) == (
        409,
        {"message": "Simulation is still running (cannot delete)"},
    )
    assert await body_of(await client.get(f"{UI}/inputs")) == (400, {"message": "Missing job_id"})
    assert await body_of(await client.get(f"{UI}/nowhere")) == (404, {"message": "Not found"})
    assert await body_of(await client.put(f"{UI}/inputs")) == (
        405,
        {"message": "Method not allowed"},
    )


async def test_keycloak_sign_in_as_the_main_api(client, conn):
    """Keycloak builds of the UI sign in through the dialect (off here: no issuer)."""
    headers = {"Authorization": "Bearer not-a-token"}
    main = await body_of(await client.post("/auth/keycloak", json={}, headers=headers))
    response = await client.post(f"{UI}/auth/keycloak", json={"username": "x"}, headers=headers)
    assert await body_of(response) == main
    assert main[0] == 403


async def test_renamed_outputs_keep_the_projects_names_and_order(client, conn):
    """The converter makes output names safe (`z profile` writes `z_profile.bdo`), so the
    simulator's estimator is `z_profile_`: the UI still needs it as `outputs[0]`, named as
    the output it belongs to (it pairs by position and finds outputs by name)."""
    await login(client)
    body = payload(EDITOR)
    body["input_json"]["scoringManager"]["outputs"][0]["name"] = "z profile"
    response = await client.post(f"{UI}/jobs/direct", json=body)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    converted = (await (await client.get(f"/inputs?job_id={job_id}")).json())["input_files"]
    assert "Filename z_profile.bdo" in converted["detect.dat"]
    await set_key(conn, job_id)
    assert (await upload(client, job_id)).status == 202  # z_profile_, yz_profile_, ...
    status, body = await body_of(await client.get(f"{UI}/estimators?job_id={job_id}"))
    assert status == 200
    assert [e["name"] for e in body["estimators_metadata"]] == ["z profile", *PROJECT_ORDER[1:]]
    path = f"{UI}/results?job_id={job_id}&estimator_name=z%20profile&page_numbers=0"
    assert await body_of(await client.get(path)) == (
        200,
        {"message": "Results", "pages": fixture_pages("z_profile_", [0])},
    )


async def test_outputs_of_the_same_name_each_reach_their_own_results(client, conn):
    """Two outputs named `peak` write `peak.bdo` and `peak_2.bdo`. The UI asks for an
    estimator's pages by the name `GET estimators` gave it, so two estimators listed as `peak`
    make it fetch the first one's pages for both tabs (the second output's results were shown
    as the first's) and give its tabs the same React key: every listed name must be unique and
    fetch its own estimator."""
    await login(client)
    body = payload(EDITOR)
    outputs = body["input_json"]["scoringManager"]["outputs"]
    outputs[2]["name"] = outputs[3]["name"] = "peak"
    response = await client.post(f"{UI}/jobs/direct", json=body)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    converted = (await (await client.get(f"/inputs?job_id={job_id}")).json())["input_files"]
    assert "Filename peak.bdo" in converted["detect.dat"]
    assert "Filename peak_2.bdo" in converted["detect.dat"]
    await set_key(conn, job_id)
    by_file = {"entrance_": "peak_", "peak_": "peak_2_"}  # as SHIELD-HIT12A names them
    renamed = [{**e, "name": by_file.get(e["name"], e["name"])} for e in RESULTS["estimators"]]
    assert (await upload(client, job_id, renamed)).status == 202
    status, body = await body_of(await client.get(f"{UI}/estimators?job_id={job_id}"))
    assert status == 200
    names = [e["name"] for e in body["estimators_metadata"]]
    assert names[:3] == ["z_profile", "yz_profile", "peak"]
    assert len(set(names)) == 4, names
    for name, stored in zip(names[2:], ["entrance_", "peak_"], strict=True):
        path = f"{UI}/results?job_id={job_id}&estimator_name={name}&page_numbers=0"
        assert await body_of(await client.get(path)) == (
            200,
            {"message": "Results", "pages": fixture_pages(stored, [0])},
        ), name


async def test_the_estimators_of_many_outputs_are_named_in_one_pass(client, conn, monkeypatch):
    """`GET /ui/estimators` looked the project's outputs up again for every estimator: a project
    of 4,000 outputs took 4 s (20,000, which the converter accepts: minutes), during which the
    process served nothing else. Now a fixed number of lookups per request, however many outputs."""
    outputs = 50
    await login(client)
    project = example()
    project["detectorManager"]["detectors"] = [
        detector(
            f"d{n}",
            "Mesh",
            (0, 0, n),
            width=1,
            height=1,
            depth=1,
            xSegments=1,
            ySegments=1,
            zSegments=10,
        )
        for n in range(outputs)
    ]
    project["scoringManager"]["outputs"] = [
        output(f"out{n}", f"d{n}", quantity("Dose")) for n in range(outputs)
    ]
    response = await client.post(f"{UI}/jobs/direct", json=payload(EDITOR, input_json=project))
    job_id = (await response.json())["job_id"]
    await set_key(conn, job_id)
    page = {"page_number": 0, "dimensions": 1, "data": {"values": [1.0]}}
    estimators = [{"name": f"out{n}_", "pages": [page]} for n in range(outputs)]
    assert (await upload(client, job_id, estimators)).status == 202
    lookups, lookup = [], shapes._by_estimator
    monkeypatch.setattr(shapes, "_by_estimator", lambda found: lookups.append(1) or lookup(found))
    status, body = await body_of(await client.get(f"{UI}/estimators", params={"job_id": job_id}))
    assert status == 200
    assert [e["name"] for e in body["estimators_metadata"]] == [f"out{n}" for n in range(outputs)]
    assert len(lookups) == 2  # the names and the order, each once: not once per estimator


async def test_a_project_is_read_once_for_the_estimators_and_results_of_its_outputs(
    client, conn, monkeypatch
):
    """The UI's estimators and results name a project's outputs, which only its input (up to
    tens of MB of JSON, parsed on the event loop) says: it is read and parsed once per process,
    not at every request (inputs never change)."""
    await login(client)
    project = example()
    mesh = {"width": 1, "height": 1, "depth": 1, "xSegments": 1, "ySegments": 1, "zSegments": 10}
    project["detectorManager"]["detectors"] = [detector("d", "Mesh", **mesh)]
    project["scoringManager"]["outputs"] = [output("peak", "d", quantity("Dose"))]
    response = await client.post(f"{UI}/jobs/direct", json=payload(EDITOR, input_json=project))
    job_id = (await response.json())["job_id"]
    await set_key(conn, job_id)
    page = {"page_number": 0, "dimensions": 1, "data": {"values": [1.0]}}
    assert (await upload(client, job_id, [{"name": "peak_", "pages": [page]}])).status == 202
    reads, read = [], stored_inputs.get
    monkeypatch.setattr(stored_inputs, "get", lambda *args: reads.append(1) or read(*args))
    found = []
    for _ in range(2):
        _, body = await body_of(await client.get(f"{UI}/estimators", params={"job_id": job_id}))
        found.append([e["name"] for e in body["estimators_metadata"]])
        params = {"job_id": job_id, "estimator_name": "peak", "page_number": "0"}
        _, body = await body_of(await client.get(f"{UI}/results", params=params))
        found.append(body["page"]["data"]["values"])
    assert (found, len(reads)) == ([["peak"], [1.0]] * 2, 1)
