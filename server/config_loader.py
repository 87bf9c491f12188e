"""Loading the configuration: config.toml plus environment overrides, into server.config.

Every scalar key `[section] key` can be overridden by `YAPTIDE_<SECTION>_<KEY>`; `DATABASE_URL`
overrides `[database] url`. A bad value raises ConfigError naming the key and the problem.
"""

import dataclasses
import math
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server import config_checks as checks
from server.config import PROJECT_DIR, SECTIONS, ClusterConfig, Config, ConfigError
from server.values import MAX_INT64

DEFAULT_CONFIG = PROJECT_DIR / "config.toml"

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def env_name(section: str, key: str) -> str:
    """The environment variable overriding `[section] key`."""
    return f"YAPTIDE_{section.upper()}_{key.upper()}"


def where_set(message: str, env: Mapping[str, str]) -> str:
    """`message` (a ConfigError's) with the environment variables that set the keys it names:
    who set YAPTIDE_AUTH_COOKIE_SAMESITE looks for that, not for a line of config.toml."""
    named = re.findall(r"\b([a-z]+)\.([a-z_]+)\b", message)
    variables = dict.fromkeys(
        env_name(section, key)
        for section, key in named
        if section in SECTIONS and key in {f.name for f in dataclasses.fields(SECTIONS[section])}
    )
    if env.get("DATABASE_URL"):  # it wins over YAPTIDE_DATABASE_URL (and database.url)
        variables = dict.fromkeys(
            v.replace("YAPTIDE_DATABASE_URL", "DATABASE_URL") for v in variables
        )
    set_here = [name for name in variables if name in env]
    return f"{message} (set by {', '.join(set_here)})" if set_here else message


def _got(value: Any, secret: bool) -> str:
    """The offending value for an error message; never the value of a secret, nor a URL that
    holds a password."""
    hidden = secret or (isinstance(value, str) and checks.has_credentials(value))
    return "" if hidden else f" (got {value!r})"


def _from_toml(key: str, kind: Any, raw: Any, secret: bool) -> Any:
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"{key}: expected {_TYPE_NAMES[kind]}{_got(raw, secret)}")
    return raw


def _from_env(key: str, kind: Any, text: str, secret: bool) -> Any:
    if kind is str:
        return text
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    elif text.isascii():  # int() and float() take other scripts' digits too
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {_TYPE_NAMES[kind]}{_got(text, secret)}")


def _checked(key: str, field: dataclasses.Field[Any], value: Any) -> Any:
    secret = field.metadata.get("secret", False)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number{_got(value, secret)}")
    if isinstance(value, int) and not -MAX_INT64 - 1 <= value <= MAX_INT64:  # as TOML takes
        raise ConfigError(f"{key}: must fit in 64 bits{_got(value, secret)}")
    check = field.metadata.get("check")
    problem = checks.text(value) if isinstance(value, str) else None
    problem = problem or (check(value) if check else None)
    if problem:
        raise ConfigError(f"{key}: {problem}{_got(value, secret)}")
    return value


def _check_env_names(env: Mapping[str, str]) -> None:
    """A YAPTIDE_<SECTION>_* variable that matches no key is a typo, not something to ignore."""
    known = {env_name(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    prefixes = tuple(f"YAPTIDE_{section.upper()}_" for section in SECTIONS)
    for name in sorted(env):
        if name.startswith(prefixes) and name not in known:
            raise ConfigError(f"{name}: unknown setting (no such key in config.toml)")


def _fields_of(key: str, cls: type, table: Any, kind: str) -> dict[str, dataclasses.Field[Any]]:
    """The settings of `cls`, once `table` is checked to be a table with no unknown key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a {kind} table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key")
    return fields


def _build_section(name: str, cls: type, table: Any, env: Mapping[str, str]) -> Any:
    fields = _fields_of(name, cls, table, f"[{name}]")
    values: dict[str, Any] = {}
    for field in fields.values():
        secret = field.metadata.get("secret", False)
        variable = env_name(name, field.name)
        if variable in env:
            value = _from_env(variable, field.type, env[variable], secret)
            values[field.name] = _checked(variable, field, value)
        elif field.name in table:
            key = f"{name}.{field.name}"
            value = _from_toml(key, field.type, table[field.name], secret)
            values[field.name] = _checked(key, field, value)
    return cls(**values)


def _build_cluster(index: int, entry: Any) -> ClusterConfig:
    key = f"clusters[{index}]"
    fields = _fields_of(key, ClusterConfig, entry, "[[clusters]]")
    missing = [
        name for name, f in fields.items() if name not in entry and f.default is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}: missing")
    values = {k: _from_toml(f"{key}.{k}", fields[k].type, v, False) for k, v in entry.items()}
    values = {k: _checked(f"{key}.{k}", fields[k], v) for k, v in values.items()}
    if not values["cluster_name"].strip():
        raise ConfigError(f"{key}.cluster_name: must not be empty")
    if values.get("host") and not values.get("work_dir"):
        raise ConfigError(f"{key}.work_dir: required with host (a directory on the cluster)")
    if not values.get("host"):  # this host's SLURM: this server's interpreter, as [slurm] has
        values.setdefault("python", "")
    return ClusterConfig(**values)


def _build_clusters(entries: Any) -> tuple[ClusterConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError("clusters: expected a list of [[clusters]] tables")
    clusters = tuple(_build_cluster(index, entry) for index, entry in enumerate(entries))
    names = [cluster.cluster_name for cluster in clusters]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"clusters[{index}].cluster_name: {name!r} is used twice")
    return clusters


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (config.toml by default) and apply environment overrides.

    A missing default config.toml means built-in defaults; a missing explicit file is an error.
    """
    env = os.environ if env is None else env
    path = path or DEFAULT_CONFIG
    data = _read_toml(path) if path.exists() or path != DEFAULT_CONFIG else {}
    unknown = sorted(set(data) - set(SECTIONS) - {"clusters"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section")
    _check_env_names(env)
    sections = {
        name: _build_section(name, cls, data.get(name, {}), env) for name, cls in SECTIONS.items()
    }
    clusters = _build_clusters(data.get("clusters", []))
    config = Config(
        **sections, clusters=clusters, file=str(path.resolve()) if path.exists() else ""
    )
    if config.auth.cookie_samesite == "None" and not config.auth.secure_cookies:
        # Browsers drop a SameSite=None cookie that is not also Secure.
        raise ConfigError("auth.cookie_samesite: None needs auth.secure_cookies = true")
    if url := env.get("DATABASE_URL"):
        if problem := checks.text(url) or checks.database_url(url):
            raise ConfigError(f"DATABASE_URL: {problem}")
        config = config.replace("database", url=url)
    return _programs_resolved(config)


def _path_resolved(value: str) -> str:
    """`value`, a path of a program, made absolute when it is relative (has a `/`): it is run
    from a task's directory. A bare name is looked up on PATH, as it is."""
    return os.path.abspath(value) if "/" in value and not os.path.isabs(value) else value


def _command_resolved(value: str) -> str:
    """A command line whose program is a relative path, with that path made absolute."""
    words = shlex.split(value)
    if not words or words[0] == _path_resolved(words[0]):
        return value
    return shlex.join([_path_resolved(words[0]), *words[1:]])


def _programs_resolved(config: Config) -> Config:
    """The programs of tasks (runner.command, runner.converter, simulators.*) with relative
    paths made absolute from the current directory, as the README says of every path: they run
    in each task's directory, where a relative path found nothing and every task failed."""
    runner, simulators = config.runner, config.simulators
    config = config.replace(
        "runner",
        command=_command_resolved(runner.command),
        converter=_command_resolved(runner.converter),
    )
    return config.replace(
        "simulators",
        shieldhit=_path_resolved(simulators.shieldhit),
        fluka=_path_resolved(simulators.fluka),
    )
