"""Configuration: config.toml plus environment overrides, loaded into frozen dataclasses.

Every scalar key `[section] key` can be overridden by `YAPTIDE_<SECTION>_<KEY>`; `DATABASE_URL`
overrides `[database] url`. A bad value raises ConfigError naming the key and the problem.
"""

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server import config_checks as checks

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "config.toml"


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = checks.checked(5000, checks.port)
    max_body_size: int = checks.checked(64 * 1024 * 1024, checks.positive)
    worker_max_body_size: int = checks.checked(256 * 1024 * 1024, checks.positive)
    workers: int = checks.checked(1, checks.positive)
    page_cache_size: int = checks.checked(64 * 1024 * 1024, checks.non_negative)
    body_cache_size: int = checks.checked(64 * 1024 * 1024, checks.non_negative)
    index_cache_size: int = checks.checked(10_000, checks.non_negative)
    public_url: str = ""
    # Limits for hostile clients (README "Security and limits").
    keepalive_timeout: float = checks.checked(75.0, checks.positive)
    body_timeout: float = checks.checked(300.0, checks.positive)
    body_budget: int = checks.checked(512 * 1024 * 1024, checks.positive)
    body_wait: float = checks.checked(10.0, checks.non_negative)


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    url: str = checks.checked("", checks.database_url, secret=True)
    data_dir: str = checks.checked("./data", checks.not_empty)
    pool_size: int = checks.checked(10, checks.positive)


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    secret: str = checks.checked("", checks.secret, secret=True)
    access_ttl: float = checks.checked(900.0, checks.positive)
    refresh_ttl: float = checks.checked(7 * 24 * 3600.0, checks.positive)
    registration: str = checks.checked("open", checks.one_of("open", "closed"))
    secure_cookies: bool = False
    cookie_samesite: str = checks.checked("Lax", checks.one_of("Lax", "Strict", "None"))
    user_cache_ttl: float = checks.checked(2.0, checks.non_negative)
    login_attempts: int = checks.checked(10, checks.positive)
    login_address_attempts: int = checks.checked(100, checks.positive)
    login_window: float = checks.checked(300.0, checks.positive)
    hash_concurrency: int = checks.checked(2, checks.positive)


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    max_ntasks: int = checks.checked(1000, checks.positive)
    max_file_size: int = checks.checked(10 * 1024 * 1024, checks.positive)
    user_quota: int = checks.checked(10 * 1024**3, checks.non_negative)


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    kind: str = checks.checked("local", checks.one_of("local", "slurm", "none"))
    command: str = checks.checked("", checks.command)
    slots: int = checks.checked(0, checks.non_negative)
    grace_period: float = checks.checked(5.0, checks.non_negative)
    work_dir: str = ""
    progress_interval: float = checks.checked(2.0, checks.positive)
    retry_timeout: float = checks.checked(600.0, checks.positive)
    converter: str = checks.checked("", checks.command)
    job_dir_ttl: float = checks.checked(7 * 24 * 3600.0, checks.non_negative)


@dataclasses.dataclass(frozen=True)
class SimulatorsConfig:
    shieldhit: str = "shieldhit"
    fluka: str = "rfluka"


@dataclasses.dataclass(frozen=True)
class KeycloakConfig:
    """Sign-in with Keycloak access tokens (POST /auth/keycloak); off while `issuer` is empty."""

    issuer: str = checks.checked("", checks.http_url)
    client_ids: str = ""  # comma-separated; a token's aud or azp must name one of them
    access_claim: str = "plgridAccessServices"  # empty: no access rule
    access_value: str = "PLG_YAPTIDE_ACCESS"
    key_cache_ttl: float = checks.checked(300.0, checks.positive)
    min_refetch_interval: float = checks.checked(10.0, checks.non_negative)
    timeout: float = checks.checked(5.0, checks.positive)
    leeway: float = checks.checked(10.0, checks.non_negative)

    def __post_init__(self) -> None:
        # Checks across keys; single values are checked where they are declared.
        if self.issuer and not self.accepted_clients:
            raise ConfigError("keycloak.client_ids: name at least one client when issuer is set")
        if self.min_refetch_interval > self.key_cache_ttl:
            raise ConfigError("keycloak.min_refetch_interval: must not exceed key_cache_ttl")

    @property
    def accepted_clients(self) -> frozenset[str]:
        return frozenset(filter(None, (name.strip() for name in self.client_ids.split(","))))

    @property
    def issuer_url(self) -> str:
        """The issuer as Keycloak writes it in tokens (no trailing slash)."""
        return self.issuer.rstrip("/")


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
    """The SLURM dispatcher: this host as a login node (runner.kind = "slurm"), the reconciler
    that watches every SLURM job (also those of [[clusters]]), and who may use clusters."""

    poll_interval: float = checks.checked(10.0, checks.positive)
    # The command that runs Python on the nodes; empty: this server's own interpreter, with
    # this project on PYTHONPATH.
    python: str = checks.checked("", checks.command)
    partition: str = checks.checked("", checks.sbatch_word)
    account: str = checks.checked("", checks.sbatch_word)
    time_limit: str = checks.checked("", checks.slurm_time)
    sbatch_lines: str = checks.checked("", checks.sbatch_lines)
    jobcomp_file: str = ""
    local_users: bool = False


@dataclasses.dataclass(frozen=True)
class UiConfig:
    api_prefix: str = checks.checked("/ui", checks.url_prefix)
    allowed_origins: str = checks.checked("", checks.origins)
    static_dir: str = ""


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """A [[clusters]] entry: where POST /jobs/batch sends jobs (see the README's cluster table)."""

    cluster_name: str
    display_name: str
    available: bool = True
    host: str = ""  # empty: this host is the cluster's login node
    port: int = checks.checked(22, checks.port)
    user: str = ""
    key_file: str = ""
    known_hosts: str = ""
    work_dir: str = checks.checked("", checks.remote_path)
    python: str = checks.checked("python3", checks.command)
    partition: str = checks.checked("", checks.sbatch_word)
    account: str = checks.checked("", checks.sbatch_word)
    time_limit: str = checks.checked("", checks.slurm_time)
    sbatch_lines: str = checks.checked("", checks.sbatch_lines)
    jobcomp_file: str = ""


@dataclasses.dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    auth: AuthConfig = AuthConfig()
    jobs: JobsConfig = JobsConfig()
    runner: RunnerConfig = RunnerConfig()
    simulators: SimulatorsConfig = SimulatorsConfig()
    ui: UiConfig = UiConfig()
    keycloak: KeycloakConfig = KeycloakConfig()
    slurm: SlurmConfig = SlurmConfig()
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
    "ui": UiConfig,
    "keycloak": KeycloakConfig,
    "slurm": SlurmConfig,
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def env_name(section: str, key: str) -> str:
    """The environment variable overriding `[section] key`."""
    return f"YAPTIDE_{section.upper()}_{key.upper()}"


def _got(value: Any, secret: bool) -> str:
    """The offending value for an error message; never the value of a secret."""
    return "" if secret else f" (got {value!r})"


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
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {_TYPE_NAMES[kind]}{_got(text, secret)}")


def _checked(key: str, field: dataclasses.Field[Any], value: Any) -> Any:
    secret = field.metadata.get("secret", False)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number{_got(value, secret)}")
    check = field.metadata.get("check")
    problem = check(value) if check else None
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


def _build_section(name: str, cls: type, table: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a [{name}] table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key")
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
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: expected a [[clusters]] table")
    fields = {f.name: f for f in dataclasses.fields(ClusterConfig)}
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key")
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
    config = Config(**sections, clusters=_build_clusters(data.get("clusters", [])))
    if config.auth.cookie_samesite == "None" and not config.auth.secure_cookies:
        # Browsers drop a SameSite=None cookie that is not also Secure.
        raise ConfigError("auth.cookie_samesite: None needs auth.secure_cookies = true")
    if url := env.get("DATABASE_URL"):
        if problem := checks.database_url(url):
            raise ConfigError(f"DATABASE_URL: {problem}")
        config = config.replace("database", url=url)
    return config
