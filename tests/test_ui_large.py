"""The web UI's calls at sizes a browser run does not reach, cross-origin over HTTP: log files
of several stored parts, streamed result bodies, body files, ETag revalidation, and CORS headers
on all of them (requests shaped like those the real UI made when driven in headless Chromium)."""

import asyncio
import copy
import io
import random

import orjson
import pytest

from server.app import create_app
from tests.helpers import (
    EDITOR,
    KEY,
    RESULTS,
    SHIELDHIT_FILES,
    add_logfiles,
    login,
    payload,
    set_key,
    set_task,
)

ORIGIN = "http://127.0.0.1:8391"
UI = "/ui"


@pytest.fixture
async def ui(aiohttp_client, make_config, conn):
    config = make_config(ui={"allowed_origins": ORIGIN})
    return await aiohttp_client(create_app(config))


async def ui_job(client, conn) -> str:
    await login(client)
    response = await client.post(f"{UI}/jobs/direct", json=payload(SHIELDHIT_FILES))
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    await set_key(conn, job_id)
    return job_id


def cors_ok(response) -> bool:
    return (
        response.headers.get("Access-Control-Allow-Origin") == ORIGIN
        and response.headers.get("Access-Control-Allow-Credentials") == "true"
    )


async def test_ui_logfiles_over_several_parts_cross_origin(ui, conn):
    job_id = await ui_job(ui, conn)
    rnd = random.Random(1)
    alphabet = 'abc \n\t"\\é€𝄞\u2028<>&'
    logs = {
        "task_1_stdout": "".join(rnd.choice(alphabet) for _ in range(3 * (1 << 20) + 17)),
        "task_1_stderr": "x" * ((1 << 20) - 1) + "é",
        "task_2_stdout": "",
    }
    await add_logfiles(ui, job_id, logs)
    for enc in ("identity", "gzip"):
        response = await ui.get(
            f"{UI}/logfiles?job_id={job_id}",
            headers={"Origin": ORIGIN, "Accept-Encoding": enc},
        )
        raw = await response.read()
        assert response.status == 200
        assert cors_ok(response)
        assert orjson.loads(raw) == {"message": "Logfiles", "logfiles": dict(sorted(logs.items()))}


def big_estimators(n_values: int) -> list:
    rnd = random.Random(n_values)
    est = copy.deepcopy(RESULTS["estimators"])
    for e in est:
        for p in e["pages"]:
            p["data"]["values"] = [rnd.random() for _ in range(n_values)]
    return est


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_ui_streamed_results_cross_origin(ui, conn, encoding):
    job_id = await ui_job(ui, conn)
    est = big_estimators(60000)
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": est}
    response = await ui.post("/results", data=io.BytesIO(orjson.dumps(body)))
    assert response.status == 202, await response.text()
    by_name = {e["name"]: e for e in est}
    for name in ("yz_profile", "z_profile"):
        pages = by_name[name + "_"]["pages"]
        n = len(pages)
        path = f"{UI}/results?job_id={job_id}&estimator_name={name}&page_numbers=0-{n + 3}"
        response = await ui.get(path, headers={"Origin": ORIGIN, "Accept-Encoding": encoding})
        raw = await response.read()
        assert response.status == 200 and cors_ok(response)
        got = orjson.loads(raw)
        assert len(got["pages"]) == n
    response = await ui.get(
        f"{UI}/results?job_id={job_id}", headers={"Origin": ORIGIN, "Accept-Encoding": encoding}
    )
    raw = await response.read()
    assert response.status == 200 and cors_ok(response)
    got = orjson.loads(raw)
    assert {e["name"] for e in got["estimators"]} == set(by_name)


async def test_ui_finished_results_revalidate_and_match_the_api(ui, conn):
    await login(ui)
    response = await ui.post(f"{UI}/jobs/direct", json={**payload(EDITOR), "ntasks": 1})
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    await set_key(conn, job_id)
    est = big_estimators(60000)
    body = {"simulation_id": job_id, "update_key": KEY, "estimators": est}
    response = await ui.post("/results", data=io.BytesIO(orjson.dumps(body)))
    assert response.status == 202, await response.text()
    identity = {"simulation_id": job_id, "update_key": KEY}
    for state in ("RUNNING", "COMPLETED"):
        await set_task(ui, identity, 1, task_state=state)
    st = await ui.get(f"{UI}/jobs/direct?job_id={job_id}")
    assert (await st.json())["job_state"] == "COMPLETED"
    paths = [
        f"{UI}/results?job_id={job_id}",
        f"{UI}/results?job_id={job_id}&estimator_name=z_profile&page_numbers=0-9",
        f"/results?job_id={job_id}",
        f"/results?job_id={job_id}&estimator_name=z_profile_&page_numbers=0-9",
    ]
    seen = {}
    for rnd in range(3):
        for path in paths:
            for enc in ("gzip", "identity"):
                response = await ui.get(path, headers={"Origin": ORIGIN, "Accept-Encoding": enc})
                raw = await response.read()
                assert response.status == 200 and cors_ok(response), (path, enc)
                data = orjson.loads(raw)
                etag = response.headers.get("ETag")
                if (path, enc) in seen:
                    assert seen[(path, enc)][0] == data, (path, enc, rnd)
                seen[(path, enc)] = (data, etag)
                r304 = await ui.get(
                    path, headers={"Origin": ORIGIN, "Accept-Encoding": enc, "If-None-Match": etag}
                )
                assert r304.status == 304
        await asyncio.sleep(1)  # body files are written in the background
    for enc in ("gzip", "identity"):
        ui_full = seen[(paths[0], enc)][0]
        api_full = seen[(paths[2], enc)][0]
        assert sorted(e["name"] for e in ui_full["estimators"]) == sorted(
            e["name"] for e in api_full["estimators"]
        )
        ui_z = seen[(paths[1], enc)][0]
        api_z = seen[(paths[3], enc)][0]
        assert ui_z["pages"] == api_z["estimators"][0]["pages"]
