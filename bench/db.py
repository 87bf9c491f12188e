"""The benchmark's own SQL: it owns the database, so it plays the dispatcher's part directly.

Update keys are handed only to a dispatcher (there is none with runner kind "none"), so the
benchmark stores the SHA-256 of a key it knows, as tests/helpers.py does. A simulation
used for the ETag/304 workload is marked COMPLETED here, as a finished run would leave it.
"""

import hashlib

import asyncpg

SET_KEY = "UPDATE simulations SET update_key_sha256 = $2 WHERE job_id = $1"
COMPLETE_TASKS = """
UPDATE tasks SET task_state = 'COMPLETED', start_time = coalesce(start_time, now()),
       end_time = now()
 WHERE simulation_id = (SELECT id FROM simulations WHERE job_id = $1)
"""
COMPLETE_JOB = "UPDATE simulations SET job_state = 'COMPLETED', end_time = now() WHERE job_id = $1"


async def set_update_keys(url: str, job_ids: list[str], key: str) -> None:
    digest = hashlib.sha256(key.encode()).digest()
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(SET_KEY, [(job_id, digest) for job_id in job_ids])
    finally:
        await conn.close()


async def mark_completed(url: str, job_id: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(COMPLETE_TASKS, job_id)
            await conn.execute(COMPLETE_JOB, job_id)
    finally:
        await conn.close()
