"""Helpers of the SLURM tests: fake simulators any test user can run, the stored SLURM ids."""

import stat
from pathlib import Path
from typing import Any

from tests.fake_simulators import REPLAYS, write_fake

MESH = REPLAYS / "mesh2d" / "ex_yzmsh.bdo"
# Copies of one run merge to that run (pymchelper's mean over ex_yzmsh.bdo's pages).
MESH_MEANS = {
    ("ex_yzmsh", "DOSE"): 1.0845853219400103,
    ("ex_yzmsh", "TLET"): 12.263980173543953,
    ("ex_yzmsh", "ZONE"): 1.0,
}


def fake_shieldhit(directory: Path, python: str | None = None, **options: Any) -> Path:
    """A fake shieldhit leaving a copy of the mesh2d run; `python`: the command that runs it
    (for a user who cannot run this interpreter), else its own shebang."""
    script = write_fake(directory / "fake_shieldhit.py", "shieldhit", {"*": [MESH]}, **options)
    if python is None:
        return script
    wrapper = directory / "shieldhit"
    wrapper.write_text(f'#!/bin/sh\nexec {python} {script} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


async def slurm_ids(conn: Any) -> tuple[int, int]:
    """(array job id, merge job id) of the one simulation."""
    row = await conn.fetchrow("SELECT array_job_id, merge_job_id FROM slurm_jobs")
    return row["array_job_id"], row["merge_job_id"]
