"""Configuration: every setting, its default and its check, as frozen dataclasses (one per
section of config.toml). server/config_loader.py reads config.toml and the environment into them.
"""

import dataclasses
from pathlib import Path
from typing import Any

from server import config_checks as checks

PROJECT_DIR = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = checks.checked("127.0.0.1", checks.listen_host)
    port: int = checks.checked(5000, checks.port)
    max_body_size: int = checks.checked(64 * 1024 * 1024, checks.positive)
    worker_max_body_size: int = checks.checked(256 * 1024 * 1024, checks.positive)
    workers: int = checks.checked(1, checks.positive)
    page_cache_size: int = checks.checked(64 * 1024 * 1024, checks.non_negative)
    body_cache_size: int = checks.checked(64 * 1024 * 1024, checks.non_negative)
    disk_cache_size: int = checks.checked(4 * 1024**3, checks.non_negative)
    index_cache_size: int = checks.checked(10_000, checks.non_negative)
    index_cache_pages: int = checks.checked(200_000, checks.non_negative)
    public_url: str = checks.checked("", checks.worker_url)
    # Limits for hostile clients (README "Security and limits").
    keepalive_timeout: float = checks.checked(75.0, checks.seconds)
    body_timeout: float = checks.checked(300.0, checks.seconds)
    body_budget: int = checks.checked(512 * 1024 * 1024, checks.positive)
    body_wait: float = checks.checked(10.0, checks.seconds_or_zero)


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    url: str = checks.checked("", checks.database_url, secret=True)
    data_dir: str = checks.checked("./data", checks.not_empty)
    pool_size: int = checks.checked(10, checks.positive)
    command_timeout: float = checks.checked(60.0, checks.seconds_or_zero)


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    secret: str = checks.checked("", checks.secret, secret=True)
    access_ttl: float = checks.checked(900.0, checks.seconds)
    refresh_ttl: float = checks.checked(7 * 24 * 3600.0, checks.seconds)
    registration: str = checks.checked("open", checks.one_of("open", "closed"))
    secure_cookies: bool = False
    cookie_samesite: str = checks.checked("Lax", checks.one_of("Lax", "Strict", "None"))
    user_cache_ttl: float = checks.checked(2.0, checks.seconds_or_zero)
    login_attempts: int = checks.checked(10, checks.positive)
    login_address_attempts: int = checks.checked(100, checks.positive)
    login_window: float = checks.checked(300.0, checks.seconds)
    hash_concurrency: int = checks.checked(2, checks.positive)


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    max_ntasks: int = checks.checked(1000, checks.ntasks)
    max_file_size: int = checks.checked(10 * 1024 * 1024, checks.positive)
    user_quota: int = checks.checked(10 * 1024**3, checks.non_negative)
    max_unfinished: int = checks.checked(1000, checks.non_negative)


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    kind: str = checks.checked("local", checks.one_of("local", "slurm", "none"))
    command: str = checks.checked("", checks.command)
    slots: int = checks.checked(0, checks.non_negative)
    grace_period: float = checks.checked(5.0, checks.seconds_or_zero)
    work_dir: str = ""
    progress_interval: float = checks.checked(2.0, checks.seconds)
    retry_timeout: float = checks.checked(600.0, checks.seconds)
    converter: str = checks.checked("", checks.command)
    job_dir_ttl: float = checks.checked(7 * 24 * 3600.0, checks.seconds_or_zero)
    sandbox: str = checks.checked("auto", checks.one_of("auto", "on", "off"))


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
    key_cache_ttl: float = checks.checked(300.0, checks.seconds)
    min_refetch_interval: float = checks.checked(10.0, checks.seconds_or_zero)
    timeout: float = checks.checked(5.0, checks.seconds)
    leeway: float = checks.checked(10.0, checks.seconds_or_zero)

    def __post_init__(self) -> None:
        # Checks across keys; single values are checked where they are declared.
        if self.issuer and not self.accepted_clients:
            raise ConfigError(
                "keycloak.client_ids: name at least one client when keycloak.issuer is set"
            )
        if self.min_refetch_interval > self.key_cache_ttl:
            raise ConfigError(
                "keycloak.min_refetch_interval: must not exceed keycloak.key_cache_ttl"
            )

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

    poll_interval: float = checks.checked(10.0, checks.seconds)
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
    locked_options: str = checks.checked("", checks.batch_option_names)  # users may not set them
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
    # The file it was read from, if any (hidden from workers: runner.sandbox); not a setting.
    file: str = dataclasses.field(default="", compare=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.database.data_dir).resolve()

    @property
    def listen_url(self) -> str:
        """`http://<host>:<port>` of the address the API listens on."""
        return _http_url(self.server.host, self.server.port)

    @property
    def base_url(self) -> str:
        """The URL workers use to reach this server: an address of this host it listens on
        ("::" listens on IPv6 only, as asyncio binds it)."""
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        host = self.server.host
        return _http_url(
            {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host), self.server.port
        )

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


def _http_url(host: str, port: int) -> str:
    """`http://<host>:<port>`, an IPv6 host in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
