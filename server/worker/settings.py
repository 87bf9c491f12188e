"""What a worker is told, read from its environment only (an HPC node has no config file).

The local runner sets these variables (server/runner/local/process.py); a batch script on a cluster
sets the same ones. The simulator and runner settings use the configuration's own override names
(`YAPTIDE_SIMULATORS_SHIELDHIT`, `YAPTIDE_RUNNER_PROGRESS_INTERVAL`, ...), so one name means one
thing everywhere. The update key lives only here: it is never logged and never passed on to
the simulator or the converter, which cannot read it from the worker either (main.py:
keep_key_from_children).
"""

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from server.config_checks import CREDENTIALS_IN_URL, has_credentials, worker_url
from server.worker import jobdir

KEY_VARIABLE = "YAPTIDE_UPDATE_KEY"
_KEY = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry as it is


class SettingsError(Exception):
    """A required variable is missing or malformed."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SettingsError(f"{name} is not set")
    return value


def _url(env: Mapping[str, str], name: str) -> str:
    raw = _required(env, name)
    problem = worker_url(raw)  # the check of [server] public_url, which the runners give as this
    if problem == CREDENTIALS_IN_URL:  # the message must not show the password
        raise SettingsError(f"{name} {problem}")
    if problem and has_credentials(raw):  # unusable besides, and not to be shown either
        raise SettingsError(
            f"{name} must be an http:// or https:// URL without a user name or password"
        )
    if problem:
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _key(env: Mapping[str, str]) -> str:
    """The update key; never in a message (a key with a line end would end in a traceback)."""
    key = _required(env, KEY_VARIABLE)
    if not _KEY.fullmatch(key):
        raise SettingsError(f"{KEY_VARIABLE} must be printable ASCII without spaces")
    return key


def _integer(env: Mapping[str, str], name: str, minimum: int) -> int:
    raw = _required(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    url: str
    simulation_id: str
    update_key: str = dataclasses.field(repr=False)
    job_dir: Path
    sim_type: str
    input_type: str
    task_id: int  # 0 for the merge step
    primaries: int
    shieldhit: str
    fluka: str
    converter: str
    progress_interval: float
    retry_timeout: float

    @property
    def task_dir(self) -> Path:
        """Where this task's result files are kept for the merge step."""
        return self.job_dir / jobdir.task_dir(self.task_id)


def load(env: Mapping[str, str] | None = None, merge: bool = False) -> Settings:
    """The worker's settings; the task variables are required unless this is the merge step."""
    env = os.environ if env is None else env
    return Settings(
        url=_url(env, "YAPTIDE_URL"),
        simulation_id=_required(env, "YAPTIDE_SIMULATION_ID"),
        update_key=_key(env),
        job_dir=Path(_required(env, "YAPTIDE_JOB_DIR")),
        sim_type=_required(env, "YAPTIDE_SIM_TYPE"),
        input_type=env.get("YAPTIDE_INPUT_TYPE") or "files",
        task_id=0 if merge else _integer(env, "YAPTIDE_TASK_ID", 1),
        primaries=0 if merge else _integer(env, "YAPTIDE_PRIMARIES", 0),
        shieldhit=env.get("YAPTIDE_SIMULATORS_SHIELDHIT") or "shieldhit",
        fluka=env.get("YAPTIDE_SIMULATORS_FLUKA") or "rfluka",
        converter=env.get("YAPTIDE_RUNNER_CONVERTER", ""),
        progress_interval=_seconds(env, "YAPTIDE_RUNNER_PROGRESS_INTERVAL", 2.0),
        retry_timeout=_seconds(env, "YAPTIDE_RUNNER_RETRY_TIMEOUT", 600.0),
    )


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the simulator and the converter: everything but the update key."""
    env = os.environ if env is None else env
    return {name: value for name, value in env.items() if name != KEY_VARIABLE}
