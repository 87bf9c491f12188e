"""The large-results generator of the benchmark (bench/large.py): the shapes it makes from the
fixture, and that the server takes them as it takes a worker's upload."""

import orjson

from bench import large
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


def test_generated_estimators_are_the_fixture_scaled():
    scale = large.Scale(bins=3, copies=2)
    text = b"".join(large.estimator_chunks(RESULTS["estimators"], scale))
    generated = orjson.loads(text)
    assert [e["name"] for e in generated] == [e["name"] for e in RESULTS["estimators"]]
    original = {e.name: e for e in parse_estimators(RESULTS["estimators"])}
    for estimator in parse_estimators(generated):  # the server's own upload parser
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
