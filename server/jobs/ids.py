"""Job ids: a simulation's public id is made here, at submission (a random UUID's text), and
JOB_ID recognises one, as the job directories on disk and on clusters are named."""

import re
import uuid

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def new_job_id() -> str:
    return str(uuid.uuid4())
