"""Issue 12, item 2: a large upload is parsed a page at a time (server/results/pagesplit.py);
what is stored and served is the same as for a body parsed whole."""

import io

import orjson

from server.results.pagesplit import SPLIT_ABOVE
from tests.helpers import KEY, login, raw_results_body, set_key, submit


def large_estimators() -> list[dict]:
    """Two estimators (with other fields) whose pages add up to more than SPLIT_ABOVE bytes."""
    values = [round(n * 0.001, 3) for n in range(100_000)]
    count = SPLIT_ABOVE // len(orjson.dumps(values)) // 2 + 2
    return [
        {
            "name": name,
            "metadata": {"unit": "Gy", "nested": {"pages": [1, 2]}},
            "pages": [
                {"metadata": {"page_number": str(n), "name": f"p{n}"}, "data": {"values": values}}
                for n in range(count)
            ],
        }
        for name in ("dose", "fluence")
    ]


async def upload(client, job_id: str, body: bytes):
    return await client.post("/results", data=io.BytesIO(body))


async def test_large_upload_round_trips(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimators = large_estimators()
    body = orjson.dumps({"simulation_id": job_id, "update_key": KEY, "estimators": estimators})
    assert len(body) > SPLIT_ABOVE
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == (202, {"message": "Results saved"})
    served = await client.get(f"/results?job_id={job_id}")
    assert served.status == 200
    assert await served.json() == {"message": "Results", "estimators": estimators}


async def test_large_upload_with_a_broken_page_is_400(client, conn) -> None:
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    body = orjson.dumps(
        {"simulation_id": job_id, "update_key": KEY, "estimators": large_estimators()}
    )
    broken = body.replace(b'"data":{"values":[0.0,', b'"data":{"values":[0.0,,', 1)
    response = await upload(client, job_id, broken)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


async def test_large_upload_with_a_broken_page_that_json_would_drop_is_400(
    client, conn, monkeypatch
) -> None:
    """A broken page in a `pages` array that a later duplicate `pages` key replaces: parsed
    whole, the body is not JSON (400); parsed a page at a time it must be the same 400."""
    from server.results import pagesplit

    monkeypatch.setattr(pagesplit, "SPLIT_ABOVE", 0)  # every body is split
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    estimator = (
        b'{"name": "e", "pages": [{"page_number": 1, "data": {"values": [nan, 01]}}],'
        b' "pages": [{"page_number": 2}]}'
    )
    body = raw_results_body(job_id, estimator)
    response = await upload(client, job_id, body)
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
