"""Fake `shieldhit` and `rfluka` executables for the worker tests (no simulator exists here).

Each is a small Python script written into a test's directory and configured through
[simulators]. It replays a real captured run from shared/fixtures/shieldhit/: the standard
output of `minimal/` line by line (the primaries scaled to its `-n`, a short sleep per primary),
or for FLUKA a progress table in `fluka_<pid>/<input>001.out`; then it copies real result files
into its working directory and exits with the configured code. It records what it was given in
the job directory (`sim_<task>.json`: argv, cwd, files, whether it saw the update key, and the
FLUKA input's text) and its pid (`simpid_<task>`).
"""

import json
import stat
import sys
from pathlib import Path
from typing import Any

from tests.helpers import FIXTURES

REPLAYS = FIXTURES / "shieldhit"
AVERAGING = REPLAYS / "averaging"
AVERAGING_SUFFIXES = ("0001", "0002", "0003", "0011", "0012", "0013", "0014")

_COMMON = r"""
import json, os, re, shutil, sys, time
from pathlib import Path

TASK = os.environ["YAPTIDE_TASK_ID"]
JOB_DIR = Path(os.environ["YAPTIDE_JOB_DIR"])


def record(**extra):
    seen = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "files": sorted(os.listdir(".")),
        "key_seen": "YAPTIDE_UPDATE_KEY" in os.environ,
        **extra,
    }
    (JOB_DIR / f"sim_{TASK}.json").write_text(json.dumps(seen))
    # Written whole, then renamed: a test polling for the pid must never read an empty file.
    partial = JOB_DIR / f".simpid_{TASK}.partial"
    partial.write_text(str(os.getpid()))
    partial.rename(JOB_DIR / f"simpid_{TASK}")


def results(seed, into):
    files = CONFIG["files"].get(TASK, CONFIG["files"].get("*", []))
    for source in files:
        name = Path(source).name
        if CONFIG["seed_suffix"]:  # like SHIELD-HIT12A's -N: mesh.bdo -> mesh_0003.bdo
            name = f"{Path(source).stem}_{seed:04d}{Path(source).suffix}"
        shutil.copyfile(source, Path(into) / name)


def finish():
    if CONFIG["hang"]:
        (JOB_DIR / f"simrunning_{TASK}").touch()
        time.sleep(120)
    print(CONFIG["stderr"], file=sys.stderr, flush=True)
    sys.exit(CONFIG["exit_code"])
"""

_SHIELDHIT = r"""
args = sys.argv[1:]
primaries = int(args[args.index("-n") + 1])
seed = int(args[args.index("-N") + 1])
record()
for line in open(CONFIG["stdout"]):
    if "NSTAT" in line:
        line = re.sub(r"\d+\s*$", f"{primaries}\n", line)
    match = re.search(r"(Primary particle no\.\s+)(\d+)", line)
    if match:
        line = line.replace(match[0], f"{match[1]}{int(match[2]) * primaries // 20}")
        time.sleep(CONFIG["delay"])
    print(line, end="", flush=True)
results(seed, args[-1])
finish()
"""

_RFLUKA = r"""
path = Path(sys.argv[-1])
text = path.read_text()
primaries = int(float(re.search(r"^START\s+(\S+)", text, re.M)[1]))
seed = int(float(re.search(r"^RANDOMIZ\s+\S+\s+(\S+)", text, re.M)[1]))
record(input=text)
work = Path(f"fluka_{os.getpid()}")
work.mkdir()
with open(work / f"{path.stem}001.out", "w") as out:
    out.write(" 1NUMBER OF BEAM     BEAM PARTICLES    ...\n")
    steps = 5
    for step in range(1, steps + 1):
        done = primaries * step // steps
        out.write(f"  {done:>12}  {primaries - done:>12}  {primaries - done:>12}"
                  f"  1.0000000E-02  1.0000000E+30  {step:>8}\n")
        out.write(" NEXT SEEDS:  1234 0 0 0 0 0\n")
        out.flush()
        time.sleep(CONFIG["delay"] * 4)
results(seed, path.parent)
shutil.rmtree(work)
print(open(CONFIG["stdout"]).read(), end="", flush=True)
finish()
"""


def write_fake(
    path: Path,
    kind: str,
    files: dict[str, list[Path]],
    *,
    delay: float = 0.01,
    exit_code: int = 0,
    hang: bool = False,
    seed_suffix: bool = False,
    stderr: str = "",
) -> Path:
    """An executable fake `shieldhit` or `rfluka` at `path`. `files` maps a task number (as a
    string, or "*" for any task) to the fixture files that task's run leaves behind."""
    stdout = REPLAYS / ("minimal" if kind == "shieldhit" else "fluka_minimal") / "stdout.txt"
    config: dict[str, Any] = {
        "files": {task: [str(file) for file in paths] for task, paths in files.items()},
        "delay": delay,
        "exit_code": exit_code,
        "hang": hang,
        "seed_suffix": seed_suffix,
        "stderr": stderr,
        "stdout": str(stdout),
    }
    body = _SHIELDHIT if kind == "shieldhit" else _RFLUKA
    script = f"#!{sys.executable}\nCONFIG = {json.dumps(config)!r}\n"
    script += "import json\nCONFIG = json.loads(CONFIG)\n" + _COMMON + body
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    # As a simulator is installed: in a directory any account may search (a server run as root
    # runs its tasks as users of their own: README, "The workers' sandbox"; pytest's are 0700).
    path.parent.chmod(path.parent.stat().st_mode | stat.S_IXOTH)
    return path


def averaging_files() -> dict[str, list[Path]]:
    """Task n of a 7-task job leaves the n-th run of every `averaging/` estimator."""
    return {
        str(task): sorted(AVERAGING.glob(f"*_{suffix}.bdo"))
        for task, suffix in enumerate(AVERAGING_SUFFIXES, 1)
    }


def averaging_payload(ntasks: int = 7) -> dict[str, Any]:
    """A files submission with the inputs of the `averaging/` runs."""
    names = ("beam.dat", "geo.dat", "mat.dat", "detect.dat")
    files = {name: (AVERAGING / name).read_text() for name in names}
    return {"sim_type": "shieldhit", "input_type": "files", "ntasks": ntasks, "input_files": files}


MESH = REPLAYS / "mesh2d" / "ex_yzmsh.bdo"


def fake_shieldhit(directory: Path, python: str | None = None, **options: Any) -> Path:
    """A fake shieldhit in `directory` leaving a copy of the mesh2d run (see write_fake).
    `python`: the command that runs it, for a user who cannot run this interpreter (the SSH
    tests' user); else the script runs by its own shebang."""
    script = write_fake(directory / "fake_shieldhit.py", "shieldhit", {"*": [MESH]}, **options)
    if python is None:
        return script
    wrapper = directory / "shieldhit"
    wrapper.write_text(f'#!/bin/sh\nexec {python} {script} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper
