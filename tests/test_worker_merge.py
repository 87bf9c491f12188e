"""The built-in worker's merge step: the numbers a user fetches with GET /results after
several tasks' SHIELD-HIT12A / FLUKA result files were merged, computed here by hand (numpy)
from the raw files, and the merge's refusals.

Everything runs end to end like tests/test_worker.py: the real server on a real port, the real
PostgreSQL, the local runner starting the real built-in worker per task and for the merge, and
a stand-in simulator (tests/fakes/simulators.py) leaving real result files, some of them
edited here (the number of primaries, the values, a second detector) to make the cases.
"""

import asyncio
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from tests.fakes.simulators import AVERAGING, REPLAYS, averaging_payload, write_fake
from tests.helpers import (
    eventually,
    logfiles_of,
    payload,
    results_of,
    states_are,
    status,
    submit,
)
from tests.test_worker import replayed

MINIMAL_MESH = REPLAYS / "minimal" / "mesh.bdo"  # DOSE, 2 x 2 x 4 ... 16 bins, 20 primaries
MINIMAL_FLUENCE = REPLAYS / "minimal" / "fluence.bdo"
FORT21 = REPLAYS / "fluka_minimal" / "minimal001_fort.21"  # USRBIN ENERGY x-z 4 x 4, 20 primaries


async def ended(client, job_id: str) -> str:
    """The job's final state (COMPLETED or FAILED), waited for."""

    async def final() -> str | None:
        state = (await status(client, job_id))["job_state"]
        return state if state in ("COMPLETED", "FAILED") else None

    return await eventually(final, timeout=90)


# --- SHIELD-HIT12A .bdo files, edited token by token (bdo2019: 24-byte header, then tokens of a
# little-endian u64 tag, an 8-byte numpy type, a u64 length and the payload) ----------------------

NSTAT_TAG = 0xAA00
DATA_TAG = 0xDDBB


def _tokens(raw: bytes):
    offset = 24
    while offset + 24 <= len(raw):
        tag = int.from_bytes(raw[offset : offset + 8], "little")
        kind = raw[offset + 8 : offset + 16].rstrip(b"\0").decode()
        count = int.from_bytes(raw[offset + 16 : offset + 24], "little")
        size = np.dtype(kind).itemsize * count
        yield tag, kind, offset + 24, size
        offset += 24 + size


def bdo_pages(path: Path) -> list[np.ndarray]:
    """The raw data blocks of a .bdo file, as SHIELD-HIT12A wrote them (cumulative for DOSE)."""
    raw = path.read_bytes()
    return [
        np.frombuffer(raw[start : start + size], kind).astype(float)
        for tag, kind, start, size in _tokens(raw)
        if tag == DATA_TAG
    ]


def bdo_primaries(path: Path) -> int:
    raw = path.read_bytes()
    for tag, kind, start, size in _tokens(raw):
        if tag == NSTAT_TAG:
            return int(np.frombuffer(raw[start : start + size], kind)[0])
    raise AssertionError("no NSTAT token")


def edited_bdo(source: Path, target: Path, nstat: int | None = None, pages=None) -> Path:
    """A copy of `source` with another number of primaries and/or other page values
    (`pages`: {page index: function of the old raw values -> new raw values})."""
    raw = bytearray(source.read_bytes())
    page = -1
    for tag, kind, start, size in list(_tokens(bytes(raw))):
        if tag == NSTAT_TAG and nstat is not None:
            raw[start : start + size] = np.array([nstat], kind).tobytes()
        if tag == DATA_TAG:
            page += 1
            if pages and page in pages:
                old = np.frombuffer(raw[start : start + size], kind).copy()
                new = np.asarray(pages[page](old), kind)
                assert new.size == old.size
                raw[start : start + size] = new.tobytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(raw))
    return target


def copied(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def values_of(results: dict[str, Any], estimator: str, page: int = 0) -> np.ndarray:
    found = next(e for e in results["estimators"] if e["name"] == estimator)
    values = found["pages"][page]["data"]["values"]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- FLUKA unformatted USRBIN files (Fortran records: length, bytes, length) -------------------

USRBIN_HEADER = "=80s32sfiii"
USRBIN_DETECTOR = "=i10siiffifffifffififff"


def fortran_records(raw: bytes) -> list[bytes]:
    records, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack("=i", raw[offset : offset + 4])
        records.append(raw[offset + 4 : offset + 4 + length])
        offset += 8 + length
    return records


def fortran_file(records: list[bytes]) -> bytes:
    return b"".join(struct.pack("=i", len(r)) + r + struct.pack("=i", len(r)) for r in records)


def usrbin(target: Path, ncase: int, detectors: list[tuple[list, np.ndarray]]) -> Path:
    """A USRBIN file like the fixture's (its header), with `ncase` primaries and detectors."""
    header = list(struct.unpack(USRBIN_HEADER, fortran_records(FORT21.read_bytes())[0]))
    header[2], header[3], header[4] = float(ncase), ncase % 10**9, ncase // 10**9
    records = [struct.pack(USRBIN_HEADER, *header)]
    for fields, data in detectors:
        records.append(struct.pack(USRBIN_DETECTOR, *fields))
        records.append(np.asarray(data, "<f4").tobytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(fortran_file(records))
    return target


def fixture_detector() -> tuple[list, np.ndarray]:
    records = fortran_records(FORT21.read_bytes())
    return list(struct.unpack(USRBIN_DETECTOR, records[1])), np.frombuffer(records[2], "<f4")


def centres(low: float, high: float, n: int) -> list[float]:
    edges = np.linspace(low, high, n + 1)
    return list((edges[:-1] + edges[1:]) / 2)


# --- what is merged, and what is refused ----------------------------------------------------


async def test_a_task_with_zero_primaries_does_not_turn_the_merged_dose_into_nulls(
    start_worker, fake, conn, tmp_path
):
    """3 tasks for 2 primaries (a files submission: the split gives 1, 1, 0). The third task is
    asked for `-n 0` and its simulator, having simulated nothing, writes a file with NSTAT 0 and
    nothing scored. That task contributes nothing: the merged dose per primary is the total
    energy scored over the total primaries, (c1 + c2) / (n1 + n2). It was every value NaN
    (null in GET /results): 0/0 on reading, then weight 0 times NaN in the weighted mean."""
    first = copied(MINIMAL_MESH, tmp_path / "t1" / "mesh.bdo")
    second = edited_bdo(
        MINIMAL_MESH, tmp_path / "t2" / "mesh.bdo", nstat=60, pages={0: lambda old: old * 3 + 0.5}
    )
    nothing = edited_bdo(
        MINIMAL_MESH, tmp_path / "t3" / "mesh.bdo", nstat=0, pages={0: lambda old: old * 0}
    )
    shieldhit = fake({"1": [first], "2": [second], "3": [nothing]})
    client, _, _ = await start_worker({"shieldhit": str(shieldhit)})
    job_id = await submit(client, averaging_payload(ntasks=3), number_of_primaries=2)
    body = await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=90)
    assert [t["requested_primaries"] for t in body["job_tasks_status"]] == [1, 1, 0]

    expected = (bdo_pages(first)[0] + bdo_pages(second)[0]) / (20 + 60)
    results = await results_of(client, job_id)
    merged = values_of(results, "mesh")
    assert not np.isnan(merged).any(), "the merged dose holds nulls"
    np.testing.assert_allclose(merged, expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("task1", "task2", "what"),
    [
        # The same detector name, the same number of bins (10), other energy binning: linear
        # 1-D energy spectrum in task 1, logarithmic in task 2.
        (REPLAYS / "diff" / "fluence_elin.bdo", REPLAYS / "diff" / "fluence_elog.bdo", "binning"),
        # The same shape (two single-value pages), other quantities: DOSE and FLUENCE in task
        # 1, DLET and TLET in task 2.
        (
            AVERAGING / "normalisation-5_aggregation-mean_0001.bdo",
            AVERAGING / "normalisation-3_aggregation-mean_0001.bdo",
            "quantities",
        ),
    ],
)
async def test_files_that_do_not_describe_the_same_scoring_are_not_merged(
    start_worker, fake, conn, tmp_path, task1, task2, what
):
    """Two tasks' files of one detector that differ in binning or in what they score: the merge
    must fail clearly (FAILED, a `merge` log naming the file), not average unrelated numbers.
    It only compared the number of values per page: the job was COMPLETED with the primaries-
    weighted mean of a linear and a logarithmic spectrum (shown on task 1's energy axis), or of
    DOSE with DLET under the name DOSE (unit MeV/g/prim)."""
    first = copied(task1, tmp_path / "t1" / "scoring.bdo")
    second = copied(task2, tmp_path / "t2" / "scoring.bdo")
    client, _, _ = await start_worker({"shieldhit": str(fake({"1": [first], "2": [second]}))})
    job_id = await submit(client, averaging_payload(ntasks=2))
    state = await ended(client, job_id)
    logs = await logfiles_of(conn)
    assert state == "FAILED", f"{what}: merged into {await results_of(client, job_id)}"
    assert logs["merge"].startswith("The results could not be merged: task_2/scoring.bdo")
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0


@pytest.mark.parametrize(
    ("second", "case"),
    [
        # a depth profile: 10 bins along z, beside the fixture's 4 x 4 x-z map
        (((-1.0, 1.0, 1), (-1.0, 1.0, 1), (0.0, 5.0, 10)), "other number of bins"),
        # as many bins as the map (16), all along z from 0 to 8
        (((-1.0, 1.0, 1), (-1.0, 1.0, 1), (0.0, 8.0, 16)), "same number of bins"),
    ],
    ids=["10-bins", "16-bins"],
)
async def test_fluka_usrbin_detectors_of_different_binning_on_one_unit(
    start_worker, conn, tmp_path, second, case
):
    """A FLUKA input with two USRBIN detectors writing to the same unit (-21), as FLUKA users
    commonly do: the fixture's ENERGY map (x 4 bins -5..5, z 4 bins 0..5) and a z profile.
    Each detector is a page of estimator `21`, each with its own axes. The reader keeps one
    set of axes per file (the last detector's): with another number of bins the job FAILED
    with "cut short or damaged" (a valid file); with the same number of bins page 0, a 4 x 4
    map, was shown as a 1-D profile over the second detector's z axis (wrong axes)."""
    map_fields, map_data = fixture_detector()
    (xl, xh, nx), (yl, yh, ny), (zl, zh, nz) = second
    profile_fields = list(map_fields)
    profile_fields[1] = b"profile   "
    profile_fields[4:8] = [xl, xh, nx, (xh - xl) / nx]
    profile_fields[8:12] = [yl, yh, ny, (yh - yl) / ny]
    profile_fields[12:16] = [zl, zh, nz, (zh - zl) / nz]
    profile_data = np.arange(1, nx * ny * nz + 1) * 1e-4
    output = usrbin(
        tmp_path / "out" / "minimal001_fort.21",
        20,
        [(map_fields, map_data), (profile_fields, profile_data)],
    )
    rfluka = write_fake(tmp_path / "rfluka", "fluka", {"*": [output]}, delay=0.0)
    client, _, _ = await start_worker({"fluka": str(rfluka)})
    job_id = await submit(client, payload("fluka_json_payload_files.json", ntasks=1))
    state = await ended(client, job_id)
    logs = await logfiles_of(conn)
    assert state == "COMPLETED", f"{case}: {logs.get('merge')}"
    pages = (await results_of(client, job_id))["estimators"][0]["pages"]
    assert [p["dimensions"] for p in pages] == [2, 1]
    np.testing.assert_allclose(pages[0]["axis_dim1"]["values"], centres(-5.0, 5.0, 4))
    np.testing.assert_allclose(pages[0]["axis_dim2"]["values"], centres(0.0, 5.0, 4))
    np.testing.assert_allclose(pages[1]["axis_dim1"]["values"], centres(zl, zh, nz))
    np.testing.assert_allclose(pages[0]["data"]["values"], map_data.astype(float) * 1000)
    np.testing.assert_allclose(pages[1]["data"]["values"], profile_data * 1000, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "units"),
    [("fluence_elin", ["MeV"]), ("fluence_2d_lin", ["MeV", "deg"])],
)
async def test_differential_axes_carry_their_own_units(start_worker, fake, conn, name, units):
    """Differential fluence (SHIELD-HIT12A, unit /cm^2/MeV[/deg] per primary): the file gives
    `page_diff_units` "/cm^2;MeV[;deg]", the fluence's own unit, then one per differential
    axis. The energy axis (0.01-100 MeV) was labelled "/cm^2" and the second axis "MeV": every
    unit taken one place too early (pymchelper's reader reads element 0 for axis 1)."""
    source = REPLAYS / "diff" / f"{name}.bdo"
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": [source]}))})
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)
    (page,) = (await results_of(client, job_id))["estimators"][0]["pages"]
    assert page["metadata"]["page_diff_units"] == ";".join(["/cm^2", *units])
    shown = [page[f"axis_dim{n + 1}"]["unit"] for n in range(page["dimensions"])]
    assert shown == units


# --- the numbers, against the raw files ------------------------------------------------------


async def test_dose_of_unequal_tasks_is_the_primaries_weighted_mean(
    start_worker, fake, conn, tmp_path
):
    """Three tasks of 20, 60 and 5 primaries, each with its own scored energy (a 2-D mesh):
    dose per primary = sum of energy / sum of primaries; values exact as float64."""
    rng = np.random.default_rng(7)
    first = copied(MINIMAL_MESH, tmp_path / "t1" / "mesh.bdo")
    second = edited_bdo(
        MINIMAL_MESH,
        tmp_path / "t2" / "mesh.bdo",
        nstat=60,
        pages={0: lambda old: rng.uniform(0, 40, old.size)},
    )
    third = edited_bdo(
        MINIMAL_MESH,
        tmp_path / "t3" / "mesh.bdo",
        nstat=5,
        pages={0: lambda old: rng.uniform(0, 4, old.size)},
    )
    shieldhit = fake({"1": [first], "2": [second], "3": [third]}, seed_suffix=True)
    client, _, _ = await start_worker({"shieldhit": str(shieldhit)})
    job_id = await submit(client, averaging_payload(ntasks=3))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=90)
    results = await results_of(client, job_id)
    raw = [bdo_pages(p)[0] for p in (first, second, third)]
    primaries = [bdo_primaries(p) for p in (first, second, third)]
    assert primaries == [20, 60, 5]
    expected = sum(raw) / sum(primaries)
    np.testing.assert_allclose(values_of(results, "mesh"), expected, rtol=1e-12)
    mesh = results["estimators"][0]
    assert mesh["metadata"]["number_of_primaries"] == "85"
    assert mesh["metadata"]["file_counter"] == "3"
    page = mesh["pages"][0]
    assert (page["data"]["name"], page["data"]["unit"]) == ("DOSE", "MeV/g/prim")
    assert page["metadata"]["page_normalized"] == "2"


async def test_float64_values_round_trip_exactly(start_worker, fake, conn, tmp_path):
    """One task, NSTAT 1 (values divided by 1.0): GET /results gives the file's values bit for
    bit, subnormals and the largest float included."""
    special = np.array(
        [
            1 / 3,
            0.1,
            2 / 3 * 1e-300,
            5e-324,
            1.7976931348623157e308,
            -0.0,
            123456789.123456789,
            np.pi,
            np.e,
            1e-17,
            7.0,
            0.0,
            2.0**-1074 * 3,
            1e22,
            9007199254740993.0,
            1e-5,
        ]
    )
    single = edited_bdo(
        MINIMAL_MESH, tmp_path / "t1" / "mesh.bdo", nstat=1, pages={0: lambda old: special}
    )
    client, _, _ = await start_worker({"shieldhit": str(fake({"*": [single]}))})
    job_id = await submit(client, averaging_payload(ntasks=1))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)
    got = (await results_of(client, job_id))["estimators"][0]["pages"][0]["data"]["values"]
    assert got == special.tolist()


async def test_fluka_tasks_weighted_by_their_primaries(start_worker, conn, tmp_path):
    """FLUKA results are per primary already: two tasks of 20 and 60 primaries merge to their
    weighted mean; ENERGY is shown in MeV (FLUKA's GeV x 1000)."""
    fields, data = fixture_detector()
    other = np.linspace(0, 3e-3, data.size).astype("<f4")
    one = usrbin(tmp_path / "t1" / "minimal001_fort.21", 20, [(fields, data)])
    two = usrbin(tmp_path / "t2" / "minimal001_fort.21", 60, [(fields, other)])
    rfluka = write_fake(tmp_path / "rfluka", "fluka", {"1": [one], "2": [two]}, delay=0.0)
    client, _, _ = await start_worker({"fluka": str(rfluka)})
    job_id = await submit(client, payload("fluka_json_payload_files.json", ntasks=2))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)
    results = await results_of(client, job_id)
    expected = (20 * data.astype(float) + 60 * other.astype(float)) / 80 * 1000
    np.testing.assert_allclose(values_of(results, "21"), expected, rtol=1e-9)
    estimator = results["estimators"][0]
    assert estimator["metadata"]["number_of_primaries"] == "80"
    assert estimator["pages"][0]["data"]["unit"] == "MeV"


class DelaysCompleted:
    """Holds task 2's COMPLETED for a few seconds (then passes it on): time to act on its
    listed result files before the merge step, which follows that report, reads them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.method == "POST" and request.path == "/tasks":
            raw = await request.read()
            request = replayed(request, raw)
            body = orjson.loads(raw)
            if body.get("task_id") == 2 and body["update_dict"].get("task_state") == "COMPLETED":
                await asyncio.sleep(self.seconds)
        return await handler(request)


async def test_missing_result_file_fails_the_merge_with_a_log(start_worker, fake, conn, tmp_path):
    """A file a task listed is gone when the merge runs: FAILED, `merge` log naming it."""
    client, _, config = await start_worker(
        {"shieldhit": str(fake({"*": [MINIMAL_MESH]}))}, middleware=DelaysCompleted(3.0)
    )
    job_id = await submit(client, averaging_payload(ntasks=2))
    job_dir = config.data_dir / "jobs" / job_id

    async def listed() -> bool:
        return (job_dir / "task_2" / ".yaptide_results.json").exists()

    await eventually(listed, timeout=60)
    (job_dir / "task_2" / "mesh.bdo").unlink()
    assert await ended(client, job_id) == "FAILED"
    log = (await logfiles_of(conn))["merge"]
    assert log.startswith("The results could not be merged: task_2/mesh.bdo could not be read")
    assert await conn.fetchval("SELECT count(*) FROM estimators") == 0
