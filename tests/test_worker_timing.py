"""How long a job waits for its merge: from its last task's end to COMPLETED (printed, never
asserted). Slow (a 50-task job), so it runs only when asked:

    YAPTIDE_MEASURE=1 .venv/bin/python -m pytest -q -s tests/test_worker_timing.py
"""

import os

import pytest

from tests.fakes.simulators import REPLAYS, averaging_files, averaging_payload, write_fake
from tests.helpers import eventually, start_worker_app, states_are, submit, task_and_job_ends

pytestmark = pytest.mark.skipif(
    not os.environ.get("YAPTIDE_MEASURE"), reason="set YAPTIDE_MEASURE=1 to measure"
)


@pytest.mark.parametrize(
    ("label", "ntasks", "files", "seed_suffix"),
    [
        ("7 tasks of averaging/", 7, averaging_files, False),
        ("50 tasks of mesh2d/", 50, lambda: {"*": [REPLAYS / "mesh2d" / "ex_yzmsh.bdo"]}, True),
    ],
)
async def test_merge_delay(
    label,
    ntasks,
    files,
    seed_suffix,
    aiohttp_server,
    aiohttp_client,
    unused_tcp_port,
    make_config,
    conn,
    tmp_path,
):
    shieldhit = write_fake(
        tmp_path / "shieldhit", "shieldhit", files(), delay=0.001, seed_suffix=seed_suffix
    )
    client, _, _ = await start_worker_app(
        aiohttp_server, aiohttp_client, unused_tcp_port, make_config, {"shieldhit": str(shieldhit)}
    )
    job_id = await submit(client, averaging_payload(ntasks=ntasks))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=600)
    delay, state = await task_and_job_ends(conn)
    print(f"\n{label}: last task end -> {state} in {delay:.3f} s")
