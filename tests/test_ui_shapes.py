"""The UI dialect's shapes, one pure function at a time (server/ui/shapes.py)."""

import orjson
import pytest

from server.jobs.input_answers import spliced as splice
from server.ui import shapes


def test_list_item_has_metadata_and_no_job_state():
    item = {
        "job_id": "j1",
        "title": "Proton beam",
        "start_time": "2024-01-15T10:00:00Z",
        "end_time": None,
        "job_state": "RUNNING",
        "sim_type": "shieldhit",
        "input_type": "editor",
        "platform": "direct",
        "ntasks": 4,
    }
    assert shapes.list_item(item) == {
        "job_id": "j1",
        "title": "Proton beam",
        "start_time": "2024-01-15T10:00:00Z",
        "end_time": None,
        "metadata": {
            "platform": "DIRECT",
            "server": "Yaptide",
            "input_type": "EDITOR",
            "sim_type": "shieldhit",
        },
    }


def test_simulations_keeps_paging_fields():
    body = {"message": "User simulations", "simulations": [], "page_count": 0}
    assert shapes.simulations({**body, "simulations_count": 0}) == {
        **body,
        "simulations_count": 0,
    }


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (None, None),
        (0, {"hours": 0, "minutes": 0, "seconds": 0}),
        (59, {"hours": 0, "minutes": 0, "seconds": 59}),
        (3725, {"hours": 1, "minutes": 2, "seconds": 5}),
        (90061, {"hours": 25, "minutes": 1, "seconds": 1}),
        (-5, {"hours": 0, "minutes": 0, "seconds": 0}),
    ],
)
def test_estimated_time(seconds, expected):
    assert shapes.estimated_time(seconds) == expected


def test_job_status_reshapes_only_estimated_time():
    task = {"task_id": 1, "task_state": "RUNNING", "estimated_time": 61, "start_time": None}
    body = {"message": "Job status", "job_state": "RUNNING", "job_tasks_status": [task]}
    assert shapes.job_status(body) == {
        "message": "Job status",
        "job_state": "RUNNING",
        "job_tasks_status": [{**task, "estimated_time": {"hours": 0, "minutes": 1, "seconds": 1}}],
    }


@pytest.mark.parametrize(
    "stored, name", [("z_profile_", "z_profile"), ("peak", "peak"), ("a__", "a_"), ("_", "_")]
)
def test_estimator_name(stored, name):
    assert shapes.estimator_name(stored) == name


def test_stored_names_tries_the_simulators_suffix_first():
    assert shapes.stored_names("z_profile") == ("z_profile_", "z_profile")
    assert shapes.stored_names("odd_") == ("odd_",)


@pytest.mark.parametrize(
    "dimensions, dimension",
    [([1], 0), ([], 0), ([400], 1), ([80, 400], 2), ([1, 1, 400], 1), ([5, 6, 7], 3)],
)
def test_page_dimension_counts_axes_longer_than_one(dimensions, dimension):
    assert shapes.page_dimension(dimensions) == dimension


def test_estimators_metadata():
    body = {
        "message": "Estimators",
        "estimators": [
            {
                "name": "yz_",
                "pages": [
                    {"page_number": 0, "name": "DOSE", "dimensions": [80, 400]},
                    {"page_number": 2, "name": "", "dimensions": [1]},
                ],
            },
            {"name": "empty", "pages": []},
        ],
    }
    assert shapes.estimators(body) == {
        "message": "Estimators",
        "estimators_metadata": [
            {
                "name": "yz",
                "pages_metadata": [
                    {"page_number": 0, "page_name": "DOSE", "page_dimension": 2},
                    {"page_number": 2, "page_name": "", "page_dimension": 0},
                ],
            },
            {"name": "empty", "pages_metadata": []},
        ],
    }


def test_inputs_of_an_editor_project():
    project = {"project": {"title": "t"}, "beam": {"numberOfParticles": 10}}
    files = {"beam.dat": "NSTAT 10 0\n"}
    spliced = splice(shapes.inputs("editor", True, 10), orjson.dumps(project), orjson.dumps(files))
    assert orjson.loads(spliced) == {
        "message": "Inputs",
        "input": {
            "input_type": "EDITOR",
            "input_json": project,
            "input_files": files,
            "number_of_all_primaries": 10,
        },
    }
    spliced = splice(shapes.inputs("editor", False, 10), orjson.dumps(project), None)
    assert orjson.loads(spliced)["input"]["input_files"] == {}


def test_inputs_of_files():
    files = {"beam.dat": "NSTAT 100 0\n"}
    assert orjson.loads(splice(shapes.inputs("files", False, 100), orjson.dumps(files), None)) == {
        "message": "Inputs",
        "input": {"input_type": "FILES", "input_files": files, "number_of_all_primaries": 100},
    }


def test_project_outputs():
    project = {"scoringManager": {"outputs": [{"name": "z"}, {"name": "yz"}, {"uuid": "x"}]}}
    assert shapes.project_outputs(project) == [("z", "z"), ("yz", "yz"), ("output_3", "output_3")]
    for broken in ({}, [], {"scoringManager": []}, {"scoringManager": {"outputs": {}}}):
        assert shapes.project_outputs(broken) == []


def test_project_outputs_named_as_the_converter_names_their_files():
    outputs = [{"name": "z profile"}, {"name": "peak"}, {"name": "peak"}]
    project = {"scoringManager": {"outputs": outputs}}
    assert shapes.project_outputs(project) == [
        ("z profile", "z_profile"),
        ("peak", "peak"),
        ("peak_2", "peak_2"),  # a second `peak` is listed by its file: names stay unique
    ]
    found = shapes.project_outputs(project)
    key = shapes.project_position(found)
    stored = ["peak_2_", "peak_", "z_profile_"]
    assert sorted(stored, key=key) == ["z_profile_", "peak_", "peak_2_"]
    assert [shapes.ui_names(found)(name) for name in stored] == ["peak_2", "peak", "z profile"]
    assert shapes.stored_names("z profile", found)[0] == "z_profile_"
    assert shapes.stored_names("peak_2", found)[0] == "peak_2_"


def test_ui_names_of_outputs_stay_unique():
    """A duplicate's file name may be another output's project name: it is not taken."""
    outputs = [{"name": "peak"}, {"name": "peak"}, {"name": "peak_2"}, {"name": "a b"}, {}]
    found = shapes.project_outputs({"scoringManager": {"outputs": outputs}})
    names = [name for name, _ in found]
    assert len(set(names)) == len(names) == 5, found
    assert names[0] == "peak" and names[2] == "peak_2" and names[3] == "a b"
    for name, file in found:
        assert shapes.stored_names(name, found)[0] == file + "_"


def _outputs(*names: str) -> list[tuple[str, str]]:
    return [(name, name) for name in names]


def test_project_position_orders_stored_estimators_like_the_outputs():
    key = shapes.project_position(_outputs("z_profile", "yz_profile", "peak"))
    stored = ["yz_profile_", "extra_", "peak_", "z_profile_", "other"]
    assert sorted(stored, key=key) == ["z_profile_", "yz_profile_", "peak_", "extra_", "other"]


def test_estimators_metadata_in_project_order():
    body = {
        "message": "Estimators",
        "estimators": [{"name": "b_", "pages": []}, {"name": "a_", "pages": []}],
    }
    assert shapes.estimators(body, _outputs("a", "b"))["estimators_metadata"] == [
        {"name": "a", "pages_metadata": []},
        {"name": "b", "pages_metadata": []},
    ]
    assert [e["name"] for e in shapes.estimators(body)["estimators_metadata"]] == ["b", "a"]
