"""`python run.py convert PROJECT.json OUTDIR [--primaries N]` as a person runs it."""

import json
import subprocess
import sys
from pathlib import Path

from server.editor import convert
from tests.helpers import FIXTURES

PROJECT = Path(__file__).resolve().parent.parent


def run_convert(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(PROJECT / "run.py"), "convert", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_convert_writes_the_files_of_a_submission_or_a_bare_project(tmp_path: Path) -> None:
    submission = FIXTURES / "json_payload_editor.json"
    result = run_convert(str(submission), str(tmp_path / "out"), "--primaries", "2500")
    assert (result.returncode, result.stderr) == (0, "")
    expected = convert(json.loads(submission.read_text())["input_json"], 2500)
    names = ["beam.dat", "mat.dat", "geo.dat", "detect.dat"]
    assert result.stdout.splitlines() == [str(tmp_path / "out" / name) for name in names]
    assert {path.name: path.read_text() for path in (tmp_path / "out").iterdir()} == expected
    bare = tmp_path / "project.json"
    bare.write_text(json.dumps(json.loads(submission.read_text())["input_json"]))
    assert run_convert(str(bare), str(tmp_path / "again")).returncode == 0
    assert "NSTAT       10000 0" in (tmp_path / "again" / "beam.dat").read_text()  # the project's


def test_convert_refusals_are_one_line(tmp_path: Path) -> None:
    project = json.loads((FIXTURES / "json_payload_editor.json").read_text())["input_json"]
    project["zoneManager"]["zones"][0]["materialUuid"] = "unobtainium"
    path = tmp_path / "project.json"
    path.write_text(json.dumps(project))
    result = run_convert(str(path), str(tmp_path / "out"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: zone 'Water_phantom_zone': its material is not one of the project's materials\n"
    )
    assert not (tmp_path / "out").exists()
    path.write_text("{")
    assert run_convert(str(path), str(tmp_path / "out")).stderr.startswith(
        f"Error: {path} is not JSON"
    )
    refusals = [
        (None, [], "the project has no beam.numberOfParticles: give --primaries N"),
        # A boolean was once written as `NSTAT True 0`; the others were said to be missing.
        (True, [], "primaries must be a whole number of 1 or more (got True)"),
        (-5, [], "primaries must be a whole number of 1 or more (got -5)"),
        ("abc", [], "primaries must be a whole number of 1 or more (got 'abc')"),
        (10, ["--primaries", str(2**63)], f"primaries must be at most {2**63 - 1} (got {2**63})"),
    ]
    for count, options, message in refusals:
        project["beam"]["numberOfParticles"] = count
        path.write_text(json.dumps(project))
        result = run_convert(str(path), str(tmp_path / "out"), *options)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"Error: {message}\n")
        assert not (tmp_path / "out").exists()
