"""Shared steps of the results tests: submit a job, give it a known update key, upload."""

import hashlib
from typing import Any

import orjson

from tests.conftest import FIXTURES

RESULTS = orjson.loads((FIXTURES / "json_with_results.json").read_bytes())
FILES_PAYLOAD = orjson.loads((FIXTURES / "shieldhit_json_payload_files.json").read_bytes())
KEY = "test-update-key"


def page_number(page: dict[str, Any]) -> int:
    return int(page["metadata"]["page_number"])


def reference(
    estimator: str | None = None, numbers: set[int] | None = None
) -> list[dict[str, Any]]:
    """The fixture's estimators as GET /results should return them, filtered like the server."""
    out = []
    for entry in RESULTS["estimators"]:
        if estimator is not None and entry["name"] != estimator:
            continue
        pages = sorted(entry["pages"], key=page_number)
        if numbers is not None:
            pages = [page for page in pages if page_number(page) in numbers]
        if pages:
            out.append({"name": entry["name"], "pages": pages})
    return out


async def submit(client, payload: dict[str, Any] | None = None) -> str:
    response = await client.post("/jobs/direct", json=payload or FILES_PAYLOAD)
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def set_key(conn, job_id: str, key: str = KEY) -> None:
    """Workers get the key from the dispatcher; tests give the job a known one."""
    digest = hashlib.sha256(key.encode()).digest()
    await conn.execute(
        "UPDATE simulations SET update_key_sha256 = $2 WHERE job_id = $1", job_id, digest
    )


async def upload(client, job_id: str, estimators: list | None = None, key: str = KEY):
    body = {"simulation_id": job_id, "update_key": key, "estimators": estimators}
    if estimators is None:
        body["estimators"] = RESULTS["estimators"]
    return await client.post("/results", data=orjson.dumps(body))
