"""The large-results generator of the benchmark (bench/large.py): the shapes it makes from the
fixture, and that the server takes them as it takes a worker's upload."""

import orjson

from bench import large, paired, targets
from bench import report as report_module
from server.results.upload import parse_estimators
from tests.helpers import RESULTS

FIXTURE_BYTES = len(orjson.dumps(RESULTS["estimators"]))


def test_scale_for():
    assert large.scale_for(FIXTURE_BYTES // 2, FIXTURE_BYTES) == large.Scale(1, 1)
    assert large.scale_for(FIXTURE_BYTES * 10, FIXTURE_BYTES) == large.Scale(3, 3)
    assert large.scale_for(FIXTURE_BYTES * 500, FIXTURE_BYTES) == large.Scale(22, 23)


def test_scaled_page_splits_the_last_axis():
    page = {
        "axis_dim1": {"name": "Y", "values": [0.0, 1.0]},
        "axis_dim2": {"name": "Z", "values": [0.0, 2.0, 4.0]},
        "data": {"unit": "Gy", "values": [1, 2, 3, 4, 5, 6]},
        "metadata": {"page_number": "0", "name": "DOSE"},
    }
    scaled = large.scaled_page(page, 2, 7)
    assert scaled == {
        "axis_dim1": {"name": "Y", "values": [0.0, 1.0]},
        "axis_dim2": {"name": "Z", "values": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]},
        "data": {"unit": "Gy", "values": [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7]},
        "metadata": {"page_number": "7", "name": "DOSE"},
    }
    assert page["axis_dim2"]["values"] == [0.0, 2.0, 4.0]  # the original is left alone
    floats = large.scaled_page({"page_number": 1, "data": {"values": [1.0]}}, 3, 4)
    assert floats == {"page_number": 4, "data": {"values": [1.0, 1 + 1 / 997, 1 + 2 / 997]}}


async def test_generated_estimators_are_the_fixture_scaled():
    scale = large.Scale(bins=3, copies=2)
    text = b"".join(large.estimator_chunks(RESULTS["estimators"], scale))
    generated = orjson.loads(text)
    assert [e["name"] for e in generated] == [e["name"] for e in RESULTS["estimators"]]
    original = {e.name: e for e in await parse_estimators(RESULTS["estimators"])}
    for estimator in await parse_estimators(generated):  # the server's own upload parser
        pages = original[estimator.name].pages
        assert len(estimator.pages) == 2 * len(pages)
        stride = max(page.page_number for page in pages) + 1
        for copy, page in zip(estimator.pages[len(pages) :], pages, strict=True):
            assert copy.page_number == page.page_number + stride
            assert copy.dimensions[:-1] == page.dimensions[:-1]
            assert copy.dimensions[-1] == 3 * page.dimensions[-1]
    assert 5 * FIXTURE_BYTES < len(text) < 7 * FIXTURE_BYTES


def test_write_body(tmp_path):
    path = tmp_path / "body.json"
    made = large.write_body(path, "job-1", "key-1", 3 * FIXTURE_BYTES)
    body = orjson.loads(path.read_bytes())
    assert (body["simulation_id"], body["update_key"]) == ("job-1", "key-1")
    assert made == {"bins": 2, "copies": 2, "body_bytes": path.stat().st_size}
    assert 3 * FIXTURE_BYTES < made["body_bytes"] < 5 * FIXTURE_BYTES


def fetched(mb_per_s: float) -> dict:
    return {
        "ttfb_ms": 1.0,
        "ttfb_max_ms": 2.0,
        "mb_per_s": mb_per_s,
        "server_cpu_ms_per_mb": 0.5,
        "concurrent": {"rss_growth_mib": 2.0},
    }


def size_row(body_mb: int, ours: tuple[float, float], bare: tuple[float, float]) -> dict:
    """A `--large` row of `body_mb` MB: identity and gzip MB/s, ours and the ceiling's."""
    return {
        "body_bytes": body_mb * 1_000_000,
        "bins": 1,
        "copies": 1,
        "upload": {"seconds": 1.0, "rss_peak_mib": 100.0},
        "identity": fetched(ours[0]),
        "gzip": fetched(ours[1]),
        "ceiling": {"identity": fetched(bare[0]), "gzip": fetched(bare[1])},
    }


def test_the_large_report_compares_each_size_with_the_ceiling():
    rows = [size_row(8, (400, 2000), (2000, 2000)), size_row(400, (400, 3000), (800, 1000))]
    report = {
        "machine": {
            "date": "2026-12-01T00:00:00Z",
            "git_commit": "0123456789abcdef",
            "git_dirty": False,
            "cpu_model": "cpu",
            "nproc": 2,
            "loadavg_start": (0.0, 0.0, 0.0),
        },
        "loadavg_end": (0.0, 0.0, 0.0),
        "large": rows,
        "growth": large.growth(rows),
        "checks": [],
    }
    text = report_module.large_markdown(report)
    assert (
        "| JSON MB | identity MB/s, ceiling | identity, ours / ceiling | gzip MB/s, ceiling "
        "| gzip, ours / ceiling |\n| --- | --- | --- | --- | --- |\n"
        "| 8.0 | 2000.0 | 0.20 | 2000.0 | 1.00 |\n"
        "| 400.0 | 800.0 | 0.50 | 1000.0 | 3.00 |\n"
    ) in text
    assert report["growth"]["ceiling_identity_mb_per_s_ratio"] == 0.4
    assert report["growth"]["ceiling_gzip_mb_per_s_ratio"] == 0.5
    assert report["growth"]["gzip_mb_per_s_ratio"] == 1.5


def test_the_linearity_verdict_is_on_the_pairs_when_measured():
    rows = [size_row(8, (400, 2000), (2000, 2000)), size_row(400, (400, 3000), (800, 1000))]
    rounds = [
        {"smallest": 2000.0, "largest": 2400.0},
        {"smallest": 2500.0, "largest": 2500.0},
        {"smallest": None, "largest": 2500.0},  # a failed window counts for nothing
        {"smallest": 2000.0, "largest": 2100.0},
    ]
    pairs = {"gzip": paired.summary(rounds, "largest", "smallest")}
    assert (pairs["gzip"]["ratio"], pairs["gzip"]["low"], pairs["gzip"]["high"]) == (1.05, 1, 1.2)
    single, by_pairs = targets.large_checks(rows), targets.large_checks(rows, pairs)
    assert (single[1]["value"], single[1]["met"]) == ("1.50", False)
    assert by_pairs[1] == {
        "what": "gzip MB/s, largest / smallest",
        "target": "0.8-1.2",
        "value": "1.05",
        "met": True,
    }
    assert by_pairs[0] == single[0]  # identity: not paired, its single windows
    assert report_module.paired_growth_text(pairs) == (
        "Largest / smallest MB/s in pairs (the two sizes fetched alternately on one server, "
        "4 rounds; median (range), the targets' measure): gzip 1.05 (1.00-1.20)."
    )
