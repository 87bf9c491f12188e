"""`batch_options` a user may send with `POST /jobs/batch`: what would put a line of its own
into a batch script (run on the cluster as the server's SSH account), or set what the operator
locked, is a 400 before anything is stored or reaches SLURM (no SLURM here: the cluster suite's
tests in tests/slurm run accepted options on a real one)."""

import dataclasses

import pytest

from server.app import create_app
from server.config import ClusterConfig
from tests.fakes.simulators import averaging_payload
from tests.helpers import login, post
from tests.slurm.batch import OPTIONS

BAD_OPTIONS = [
    (
        {"array_header": "#SBATCH --time=5\nrm -rf ~"},
        "Invalid batch_options.array_header: line 2 is not an '#SBATCH --option' line",
    ),
    (
        {"array_header": "#SBATCH --partition=debug; touch /tmp/owned"},
        "Invalid batch_options.array_header: line 1 is not an '#SBATCH --option' line",
    ),
    (
        {"array_options": {"partition": "$(touch /tmp/owned)"}},
        "Invalid batch_options.array_options: bad value for --partition",
    ),
    (
        {"collect_options": {"wrap": "touch /tmp/owned"}},
        "Invalid batch_options.collect_options: option --wrap is not allowed",
    ),
    (
        {"collect_header": "#SBATCH --output=/etc/passwd"},
        "Invalid batch_options.collect_header: line 1: option --output is not allowed",
    ),
    (
        {"array_options": {"time": "5\n#SBATCH --export=ALL"}},
        "Invalid batch_options.array_options: bad value for --time",
    ),
    ({"array_options": ["--time=5"]}, "Field batch_options.array_options must be of type object"),
    # Digits of other scripts: ASCII ones only (sbatch would misread or refuse them later).
    (
        {"array_header": "#SBATCH --time=5\n#SBATCH --time=\u0661\u0662:00"},
        "Invalid batch_options.array_header: line 2: bad value for --time",
    ),
    (
        {"collect_options": {"nice": "-\u0663", "mem": "5G"}},
        "Invalid batch_options.collect_options: bad value for --nice",
    ),
    (
        {"collect_options": {"--exclusive": "all; reboot"}},
        "Invalid batch_options.collect_options: --exclusive takes no value",
    ),
    ({"cluster_name": "elsewhere"}, "Unknown cluster: elsewhere"),
    ({"cluster_name": None}, "Missing field: batch_options.cluster_name"),
    ({"cluster_name": 5}, "Field batch_options.cluster_name must be of type string"),
    ({"shell": "bash"}, "Unknown field: batch_options.shell"),
]


LOCKED = [
    (
        {"array_header": "#SBATCH --time=5\n#SBATCH --account=grant-of-another-team"},
        "Invalid batch_options.array_header: line 2: option --account is locked on cluster hpc",
    ),
    (
        {"collect_options": {"--qos": "high"}},
        "Invalid batch_options.collect_options: option --qos is locked on cluster hpc",
    ),
]


@pytest.fixture
async def client(aiohttp_client, make_config, conn, no_sbatch):
    """A server with the cluster "hpc" (its account and QOS locked), no SLURM reachable."""
    hpc = ClusterConfig("hpc", "HPC", work_dir="/w", locked_options="account, --qos")
    config = make_config(slurm={"local_users": True}, runner={"kind": "none"})
    client = await aiohttp_client(create_app(dataclasses.replace(config, clusters=(hpc,))))
    await login(client)
    return client


@pytest.mark.parametrize(("change", "message"), BAD_OPTIONS + LOCKED)
async def test_bad_batch_options_are_refused_before_anything_is_stored(
    client, conn, change, message
):
    body = {**averaging_payload(ntasks=1), "batch_options": {**OPTIONS, **change}}
    assert await post(client, "/jobs/batch", body, 400) == {"message": message}
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
