"""Configuration: config.toml plus environment overrides, loaded into frozen dataclasses.

Every scalar key `[section] key` can be overridden by `YAPTIDE_<SECTION>_<KEY>`; `DATABASE_URL`
overrides `[database] url`. A bad value raises ConfigError naming the key and the problem.
"""

import dataclasses
import os
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "config.toml"


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: int | float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be between 0 and 65535"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of: {', '.join(choices)}"

    return check


def _database_url(value: str) -> str | None:
    if value and not value.startswith(("postgres://", "postgresql://")):
        return "must be a postgresql:// URL (or empty for the embedded server)"
    return None


def _command(value: str) -> str | None:
    try:
        shlex.split(value)
    except ValueError as exc:
        return f"cannot be split like a shell command line ({exc})"
    return None


def _secret(value: str) -> str | None:
    if value and len(value) < 32:
        return "must be at least 32 characters (or empty to generate one)"
    return None


def _check(validator: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"metadata": {"check": validator}}


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = dataclasses.field(default=5000, **_check(_port))
    max_body_size: int = dataclasses.field(default=64 * 1024 * 1024, **_check(_positive))
    worker_max_body_size: int = dataclasses.field(default=256 * 1024 * 1024, **_check(_positive))
    workers: int = dataclasses.field(default=1, **_check(_positive))
    page_cache_size: int = dataclasses.field(default=64 * 1024 * 1024, **_check(_non_negative))
    body_cache_size: int = dataclasses.field(default=64 * 1024 * 1024, **_check(_non_negative))
    public_url: str = ""


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    url: str = dataclasses.field(default="", **_check(_database_url))
    data_dir: str = "./data"
    pool_size: int = dataclasses.field(default=10, **_check(_positive))


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    secret: str = dataclasses.field(default="", **_check(_secret))
    access_ttl: float = dataclasses.field(default=900.0, **_check(_positive))
    refresh_ttl: float = dataclasses.field(default=7 * 24 * 3600.0, **_check(_positive))
    registration: str = dataclasses.field(default="open", **_check(_one_of("open", "closed")))
    secure_cookies: bool = False
    user_cache_ttl: float = dataclasses.field(default=2.0, **_check(_non_negative))


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    max_ntasks: int = dataclasses.field(default=1000, **_check(_positive))
    max_file_size: int = dataclasses.field(default=10 * 1024 * 1024, **_check(_positive))


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    kind: str = dataclasses.field(default="local", **_check(_one_of("local", "none")))
    command: str = dataclasses.field(default="", **_check(_command))
    slots: int = dataclasses.field(default=0, **_check(_non_negative))
    grace_period: float = dataclasses.field(default=5.0, **_check(_non_negative))
    work_dir: str = ""
    progress_interval: float = dataclasses.field(default=2.0, **_check(_positive))
    retry_timeout: float = dataclasses.field(default=600.0, **_check(_positive))
    converter: str = dataclasses.field(default="", **_check(_command))


@dataclasses.dataclass(frozen=True)
class SimulatorsConfig:
    shieldhit: str = "shieldhit"
    fluka: str = "rfluka"


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    cluster_name: str
    display_name: str
    available: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    auth: AuthConfig = AuthConfig()
    jobs: JobsConfig = JobsConfig()
    runner: RunnerConfig = RunnerConfig()
    simulators: SimulatorsConfig = SimulatorsConfig()
    clusters: tuple[ClusterConfig, ...] = ()

    @property
    def data_dir(self) -> Path:
        return Path(self.database.data_dir).resolve()

    @property
    def base_url(self) -> str:
        """The URL workers use to reach this server."""
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.server.port}"

    def replace(self, section: str, **values: Any) -> "Config":
        """A copy with some keys of one section changed (used by tests and run.py)."""
        updated = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **{section: updated})


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "auth": AuthConfig,
    "jobs": JobsConfig,
    "runner": RunnerConfig,
    "simulators": SimulatorsConfig,
}


def _coerce(key: str, kind: type, raw: Any, from_env: bool) -> Any:
    if from_env:
        raw = _parse_env(key, kind, raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {type(raw).__name__} {raw!r}")
    return raw


def _parse_env(key: str, kind: type, text: str) -> Any:
    if kind is str:
        return text
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}") from None


def _build_section(name: str, cls: type, table: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"[{name}] {sorted(unknown)[0]}: unknown key")
    values: dict[str, Any] = {}
    for field in fields.values():
        key = f"{name}.{field.name}"
        env_name = f"YAPTIDE_{name.upper()}_{field.name.upper()}"
        if env_name in env:
            value = _coerce(env_name, field.type, env[env_name], from_env=True)
        elif field.name in table:
            value = _coerce(key, field.type, table[field.name], from_env=False)
        else:
            continue
        check = field.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            origin = env_name if env_name in env else key
            raise ConfigError(f"{origin}: {problem} (got {value!r})")
        values[field.name] = value
    return cls(**values)


def _build_clusters(entries: Any) -> tuple[ClusterConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError("clusters: expected a list of [[clusters]] tables")
    clusters = []
    for index, entry in enumerate(entries):
        try:
            cluster = ClusterConfig(**entry)
        except TypeError as exc:
            raise ConfigError(f"clusters[{index}]: {exc}") from None
        if not isinstance(cluster.cluster_name, str) or not isinstance(cluster.display_name, str):
            raise ConfigError(f"clusters[{index}]: cluster_name and display_name must be strings")
        if not isinstance(cluster.available, bool):
            raise ConfigError(f"clusters[{index}].available: expected true or false")
        clusters.append(cluster)
    return tuple(clusters)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (config.toml by default) and apply environment overrides."""
    env = os.environ if env is None else env
    path = path or DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text()) if path.exists() or path != DEFAULT_CONFIG else {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - set(SECTIONS) - {"clusters"}
    if unknown:
        raise ConfigError(f"[{sorted(unknown)[0]}]: unknown section")
    sections = {
        name: _build_section(name, cls, data.get(name, {}), env) for name, cls in SECTIONS.items()
    }
    config = Config(**sections, clusters=_build_clusters(data.get("clusters", [])))
    if env.get("DATABASE_URL"):
        url = env["DATABASE_URL"]
        problem = _database_url(url)
        if problem:
            raise ConfigError(f"DATABASE_URL: {problem}")
        config = config.replace("database", url=url)
    return config
