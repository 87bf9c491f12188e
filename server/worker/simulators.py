"""The simulators this worker runs: their inputs, command lines, seeds and result files.

pymchelper's executor knows both command lines: SHIELD-HIT12A takes the number of primaries
(`-n`) and a random seed offset (`-N`, added to RNDSEED from beam.dat, so tasks differ and a run
stays reproducible) on its command line; FLUKA takes both from its input file (the START and
RANDOMIZ cards), and `rfluka -N0 -M1` runs one cycle of it. The seed is the task number, as
pymchelper's own runner does for its parallel runs.
"""

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pymchelper.executor.options import SimulationSettings
from pymchelper.simulator_type import SimulatorType

from server.worker.fluka_cards import MissingStart, set_task_cards

SHIELDHIT_INPUTS = ("beam.dat", "geo.dat", "mat.dat", "detect.dat")
FLUKA_OPTIONS = "-N0 -M1"


class TaskFailed(Exception):
    """The task cannot succeed; the message says why, for the user (stored as a log)."""


@dataclass(frozen=True)
class Simulator:
    sim_type: str
    title: str  # for people: "SHIELD-HIT12A"
    setting: str  # the variable naming its executable
    result_pattern: str
    # (executable, task directory, primaries, seed) -> argv; prepares the inputs it needs
    command: Callable[[str, Path, int, int], list[str]]

    def executable(self, configured: str) -> str:
        """The executable's full path (PATH is searched for a bare name)."""
        found = shutil.which(configured)
        if found is None:
            raise TaskFailed(
                f"The {self.title} executable {configured!r} was not found on this machine. "
                f"Install {self.title}, or set [simulators] {self.sim_type} in config.toml "
                f"({self.setting}) to its path."
            )
        return found

    def results(self, directory: Path, inputs: set[str]) -> list[Path]:
        """The result files the run left in `directory` (never one of the input files)."""
        found = directory.glob(self.result_pattern)
        return sorted(path for path in found if path.is_file() and path.name not in inputs)


def title_of(sim_type: str) -> str:
    """The simulator's name for people ("SHIELD-HIT12A"); the sim_type when not one of ours."""
    return SIMULATORS[sim_type].title if sim_type in SIMULATORS else sim_type


def simulator_for(sim_type: str) -> Simulator:
    simulator = SIMULATORS.get(sim_type)
    if simulator is None:
        raise TaskFailed(
            f"Simulations of type {sim_type!r} are not supported by this worker: it runs "
            f"{' and '.join(sorted(SIMULATORS))} simulations only."
        )
    return simulator


def check_shieldhit_inputs(directory: Path) -> None:
    missing = [name for name in SHIELDHIT_INPUTS if not (directory / name).is_file()]
    if missing:
        raise TaskFailed(f"SHIELD-HIT12A input files are missing: {', '.join(missing)}.")


def fluka_input(directory: Path) -> Path:
    """The one FLUKA input file (`*.inp`) of the task."""
    found = sorted(path.name for path in directory.glob("*.inp") if path.is_file())
    if len(found) != 1:
        what = "no .inp file" if not found else f"several .inp files ({', '.join(found)})"
        raise TaskFailed(f"A FLUKA simulation needs exactly one input file; found {what}.")
    return directory / found[0]


def shieldhit_command(executable: str, directory: Path, primaries: int, seed: int) -> list[str]:
    check_shieldhit_inputs(directory)
    settings = SimulationSettings(str(directory), SimulatorType.shieldhit, executable)
    settings.set_no_of_primaries(primaries)
    settings.set_rng_seed(seed)
    return [settings.executable_path, *shlex.split(settings.cmdline_opts), str(directory)]


def fluka_command(executable: str, directory: Path, primaries: int, seed: int) -> list[str]:
    path = fluka_input(directory)
    try:
        set_task_cards(path, primaries, seed)
    except MissingStart:
        raise TaskFailed(
            f"The FLUKA input {path.name} has no START card (before any STOP)."
        ) from None
    settings = SimulationSettings(str(path), SimulatorType.fluka, executable, FLUKA_OPTIONS)
    return [settings.executable_path, *shlex.split(settings.cmdline_opts), str(path)]


SHIELDHIT = Simulator(
    "shieldhit", "SHIELD-HIT12A", "YAPTIDE_SIMULATORS_SHIELDHIT", "*.bdo", shieldhit_command
)
FLUKA = Simulator("fluka", "FLUKA", "YAPTIDE_SIMULATORS_FLUKA", "*_fort.*", fluka_command)
SIMULATORS = {simulator.sim_type: simulator for simulator in (SHIELDHIT, FLUKA)}
