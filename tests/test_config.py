"""Configuration: config.toml, --config files, environment overrides and every kind of bad value."""

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import server.config_loader as loader_module
from server.config import (
    SECTIONS,
    AuthConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    ServerConfig,
)
from server.config_loader import DEFAULT_CONFIG, env_name, load_config

PROJECT = Path(__file__).resolve().parent.parent
SECRET = "s" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, toml: str = "", **env: str) -> str:
    """The one-line ConfigError message for this file and environment."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml), env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_equal_config_toml():
    """The dataclass defaults and config.toml agree, key for key (the file documents them)."""
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert set(data) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert data[name] == defaults, name
    assert load_config(DEFAULT_CONFIG, {}) == Config()


def test_every_key_is_commented_in_config_toml():
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            above = lines[index - 1]
            assert above.startswith("#") or "=" in above, f"uncommented key: {line}"


def test_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(loader_module, "DEFAULT_CONFIG", tmp_path / "absent.toml")
    assert load_config(None, {}) == Config()


def test_config_file(tmp_path):
    path = write(
        tmp_path,
        """
[server]
port = 6001
host = "0.0.0.0"
[auth]
access_ttl = 60
registration = "closed"
secure_cookies = true
[[clusters]]
cluster_name = "ares"
display_name = "Ares (Cyfronet)"
[[clusters]]
cluster_name = "athena"
display_name = "Athena"
available = false
python = "/opt/yaptide/bin/python"
[[clusters]]
cluster_name = "helios"
display_name = "Helios"
host = "login.helios.example.org"
work_dir = "/net/scratch/yaptide"
""",
    )
    config = load_config(path, {})
    assert config.server == ServerConfig(port=6001, host="0.0.0.0")
    assert config.auth == AuthConfig(access_ttl=60.0, registration="closed", secure_cookies=True)
    assert isinstance(config.auth.access_ttl, float)
    assert config.database == DatabaseConfig()
    # Without a host, the cluster is this host's SLURM: this server's interpreter unless set
    # (python3 there may lack the package); over SSH, python3 on the cluster's nodes.
    assert config.clusters == (
        ClusterConfig("ares", "Ares (Cyfronet)", True, python=""),
        ClusterConfig("athena", "Athena", False, python="/opt/yaptide/bin/python"),
        ClusterConfig(
            "helios", "Helios", host="login.helios.example.org", work_dir="/net/scratch/yaptide"
        ),
    )
    assert config.base_url == "http://127.0.0.1:6001"


@pytest.mark.parametrize(
    ("variable", "text", "section", "key", "value"),
    [
        ("YAPTIDE_SERVER_HOST", "0.0.0.0", "server", "host", "0.0.0.0"),
        ("YAPTIDE_SERVER_PORT", "6000", "server", "port", 6000),
        ("YAPTIDE_SERVER_MAX_BODY_SIZE", "1024", "server", "max_body_size", 1024),
        ("YAPTIDE_DATABASE_DATA_DIR", "/tmp/elsewhere", "database", "data_dir", "/tmp/elsewhere"),
        ("YAPTIDE_DATABASE_URL", "postgresql://h/db", "database", "url", "postgresql://h/db"),
        ("YAPTIDE_AUTH_ACCESS_TTL", "1.5", "auth", "access_ttl", 1.5),
        ("YAPTIDE_AUTH_REFRESH_TTL", "60", "auth", "refresh_ttl", 60.0),
        ("YAPTIDE_AUTH_SECURE_COOKIES", "true", "auth", "secure_cookies", True),
        ("YAPTIDE_AUTH_SECURE_COOKIES", "on", "auth", "secure_cookies", True),
        ("YAPTIDE_AUTH_SECURE_COOKIES", "0", "auth", "secure_cookies", False),
        ("YAPTIDE_AUTH_REGISTRATION", "closed", "auth", "registration", "closed"),
        (
            "YAPTIDE_RUNNER_COMMAND",
            "python -m w --x 'a b'",
            "runner",
            "command",
            "python -m w --x 'a b'",
        ),
        ("YAPTIDE_RUNNER_GRACE_PERIOD", "0", "runner", "grace_period", 0.0),
    ],
)
def test_env_overrides(variable, text, section, key, value):
    assert env_name(section, key) == variable
    config = load_config(DEFAULT_CONFIG, {variable: text})
    assert getattr(getattr(config, section), key) == value
    assert type(getattr(getattr(config, section), key)) is type(value)


def test_env_beats_file(tmp_path):
    path = write(tmp_path, "[server]\nport = 6001\n")
    assert load_config(path, {"YAPTIDE_SERVER_PORT": "6002"}).server.port == 6002


def test_every_key_has_an_env_variable():
    env = {
        env_name(name, f.name): str(f.default).lower() if f.type is bool else str(f.default)
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }
    assert load_config(DEFAULT_CONFIG, env) == Config()


def test_database_url(tmp_path):
    path = write(tmp_path, '[database]\nurl = "postgresql://file/db"\n')
    assert load_config(path, {}).database.url == "postgresql://file/db"
    env = {"DATABASE_URL": "postgres://u:p@env/db", "YAPTIDE_DATABASE_URL": "postgresql://y/db"}
    assert load_config(path, env).database.url == "postgres://u:p@env/db"
    assert load_config(path, {"DATABASE_URL": ""}).database.url == "postgresql://file/db"


def test_the_file_read_is_named(tmp_path, monkeypatch):
    """(Hidden from workers by the runner's sandbox.)"""
    path = write(tmp_path, '[runner]\nsandbox = "on"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("config.toml"), {})
    assert (config.file, config.runner.sandbox) == (str(path), "on")
    assert load_config(None, {}).file == str(DEFAULT_CONFIG)  # the project's config.toml


def test_data_dir_is_resolved():
    config = load_config(DEFAULT_CONFIG, {"YAPTIDE_DATABASE_DATA_DIR": "rel/data"})
    assert config.data_dir == Path.cwd() / "rel" / "data"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nport = "5000"', "server.port: expected an integer (got '5000')"),
        ("[server]\nport = 5000.0", "server.port: expected an integer (got 5000.0)"),
        ("[server]\nport = true", "server.port: expected an integer (got True)"),
        ("[server]\nhost = 1", "server.host: expected a string (got 1)"),
        ('[auth]\naccess_ttl = "900"', "auth.access_ttl: expected a number (got '900')"),
        (
            '[auth]\nsecure_cookies = "yes"',
            "auth.secure_cookies: expected true or false (got 'yes')",
        ),
        ("[auth]\nsecure_cookies = 1", "auth.secure_cookies: expected true or false (got 1)"),
        ("[server]\nport = 0", "server.port: must be between 1 and 65535 (got 0)"),
        ("[server]\nport = 65536", "server.port: must be between 1 and 65535 (got 65536)"),
        ("[server]\nmax_body_size = -1", "server.max_body_size: must be greater than 0 (got -1)"),
        ("[database]\npool_size = 0", "database.pool_size: must be greater than 0 (got 0)"),
        ('[database]\ndata_dir = " "', "database.data_dir: must not be empty (got ' ')"),
        ("[auth]\naccess_ttl = 0", "auth.access_ttl: must be greater than 0 (got 0.0)"),
        ("[auth]\nrefresh_ttl = inf", "auth.refresh_ttl: must be a finite number (got inf)"),
        (  # (a timer of more overflowed: every streamed answer was a 500)
            "[server]\nbody_timeout = 1e306",
            "server.body_timeout: must be at most 100 years (got 1e+306)",
        ),
        (
            "[runner]\ngrace_period = 4e9",
            "runner.grace_period: must be at most 100 years (got 4000000000.0)",
        ),
        (
            '[auth]\nregistration = "maybe"',
            "auth.registration: must be one of: open, closed (got 'maybe')",
        ),
        ("[runner]\nslots = -1", "runner.slots: must be 0 or more (got -1)"),
        ("[jobs]\nmax_unfinished = -1", "jobs.max_unfinished: must be 0 or more (got -1)"),
        (
            "[jobs]\nmax_ntasks = 10000",
            "jobs.max_ntasks: must be between 1 and 9999 (result files carry 4 digits) (got 10000)",
        ),
        (
            "[jobs]\nmax_ntasks = 0",
            "jobs.max_ntasks: must be between 1 and 9999 (result files carry 4 digits) (got 0)",
        ),
        ('[runner]\nkind = "pbs"', "runner.kind: must be one of: local, slurm, none (got 'pbs')"),
        (
            '[slurm]\ntime_limit = "soon"',
            "slurm.time_limit: must be a SLURM time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS) (got 'soon')",
        ),
        (
            '[slurm]\npartition = "a b"',
            "slurm.partition: must be one word of letters, digits and _.,:@%+=/- (got 'a b')",
        ),
        (
            '[slurm]\nsbatch_lines = "#SBATCH --qos=x\\nmodule load y"',
            "slurm.sbatch_lines: every line must start with '#SBATCH ' (got '#SBATCH --qos=x\\nmodule load y')",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\nhost = "h"',
            "clusters[0].work_dir: required with host (a directory on the cluster)",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\nhost = "h"\nwork_dir = "jobs"',
            "clusters[0].work_dir: must be an absolute path of letters, digits and _.@%+=/- (no spaces) (got 'jobs')",
        ),
        (
            '[[clusters]]\ncluster_name = " "\ndisplay_name = "A"',
            "clusters[0].cluster_name: must not be empty",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\nport = 0',
            "clusters[0].port: must be between 1 and 65535 (got 0)",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\nlocked_options = "account wrap"',
            "clusters[0].locked_options: --wrap is not an option users may set "
            "anyway (README: the batch_options whitelist) (got 'account wrap')",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\n'
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "B"',
            "clusters[1].cluster_name: 'a' is used twice",
        ),
        (
            '[runner]\ncommand = "worker \'unclosed"',
            "runner.command: cannot be split like a shell command line (No closing quotation) "
            '(got "worker \'unclosed")',
        ),
        (
            '[server]\npublic_url = "yaptide.example.org:8000"',
            "server.public_url: must be an http:// or https:// URL with a host, as workers "
            "need it for YAPTIDE_URL (or empty) (got 'yaptide.example.org:8000')",
        ),
        (
            '[server]\npublic_url = "https://operator:hunter2@yaptide.example.org/"',
            "server.public_url: must not hold a user name or password (workers send their "
            "update key)",
        ),
        (
            '[server]\npublic_url = "https://operator:hunter2@[yaptide.example.org/"',
            "server.public_url: must be an http:// or https:// URL with a host, as workers "
            "need it for YAPTIDE_URL (or empty)",
        ),
        (
            '[server]\npublic_url = "https://:8443/yaptide"',
            "server.public_url: must be an http:// or https:// URL with a host, as workers "
            "need it for YAPTIDE_URL (or empty) (got 'https://:8443/yaptide')",
        ),
        ("[server]\nprot = 5000", "server.prot: unknown key"),
        ("[servre]\nport = 5000", "servre: unknown section"),
        ("server = 5", "server: expected a [server] table"),
        ('[[clusters]]\ncluster_name = "a"', "clusters[0].display_name: missing"),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = 2',
            "clusters[0].display_name: expected a string (got 2)",
        ),
        (
            '[[clusters]]\ncluster_name = "a"\ndisplay_name = "A"\nx = 1',
            "clusters[0].x: unknown key",
        ),
        ("clusters = 1", "clusters: expected a list of [[clusters]] tables"),
    ],
)
def test_bad_toml_values(tmp_path, toml, message):
    assert error_of(tmp_path, toml) == message


@pytest.mark.parametrize(
    ("variable", "text", "problem"),
    [
        ("YAPTIDE_SERVER_PORT", "x", "expected an integer (got 'x')"),
        ("YAPTIDE_SERVER_PORT", "5000.5", "expected an integer (got '5000.5')"),
        ("YAPTIDE_SERVER_PORT", "70000", "must be between 1 and 65535 (got 70000)"),
        ("YAPTIDE_AUTH_ACCESS_TTL", "soon", "expected a number (got 'soon')"),
        ("YAPTIDE_AUTH_ACCESS_TTL", "nan", "must be a finite number (got nan)"),
        ("YAPTIDE_AUTH_ACCESS_TTL", "-5", "must be greater than 0 (got -5.0)"),
        (
            "YAPTIDE_AUTH_REFRESH_TTL",
            "1e12",
            "must be at most 100 years (got 1000000000000.0)",
        ),
        (
            "YAPTIDE_AUTH_ACCESS_TTL",
            "1e12",
            "must be at most 100 years (got 1000000000000.0)",
        ),
        (
            "YAPTIDE_SERVER_PORT",
            "\u0665\u0660\u0660\u0660",
            "expected an integer (got '\u0665\u0660\u0660\u0660')",
        ),
        (  # TOML cannot say it; PostgreSQL could not take it (every submission was then a 500)
            "YAPTIDE_JOBS_MAX_UNFINISHED",
            "99999999999999999999",
            "must fit in 64 bits (got 99999999999999999999)",
        ),
        (  # the workers add /tasks, /results, ... to it
            "YAPTIDE_SERVER_PUBLIC_URL",
            "http://127.0.0.1:5000/?site=yaptide",
            "must not have a query or a fragment: the worker adds the endpoints' paths to it "
            "(got 'http://127.0.0.1:5000/?site=yaptide')",
        ),
        (
            "YAPTIDE_SERVER_PUBLIC_URL",
            "http://127.0.0.1:5000/yaptide#main",
            "must not have a query or a fragment: the worker adds the endpoints' paths to it "
            "(got 'http://127.0.0.1:5000/yaptide#main')",
        ),
        ("YAPTIDE_AUTH_SECURE_COOKIES", "maybe", "expected true or false (got 'maybe')"),
        # Bytes that are not UTF-8 (`head -c 48 /dev/urandom`) arrive as lone surrogates: such a
        # secret signed no token (every login a 500), such a path names no file.
        ("YAPTIDE_AUTH_SECRET", "s" * 40 + "\udcff", "must be UTF-8 text"),
        ("YAPTIDE_DATABASE_DATA_DIR", "data\udcff", "must be UTF-8 text (got 'data\\udcff')"),
        ("DATABASE_URL", "postgresql://h/db\udcff", "must be UTF-8 text"),
        (
            "YAPTIDE_DATABASE_DATA_DIR",
            "da\0ta",
            "must not contain NUL characters (got 'da\\x00ta')",
        ),
        (  # the built-in converter was off, and every sandboxed task failed with an IndexError
            "YAPTIDE_RUNNER_CONVERTER",
            "   ",
            "is blank: a command, or \"\" for the default (got '   ')",
        ),
        (
            "YAPTIDE_SLURM_TIME_LIMIT",
            "\u0661:00",
            "must be a SLURM time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS) (got '\u0661:00')",
        ),
        ("YAPTIDE_AUTH_REGISTRATION", "OPEN", "must be one of: open, closed (got 'OPEN')"),
        (  # it listened on every interface, printing http://:5000
            "YAPTIDE_SERVER_HOST",
            "",
            "must not be empty (0.0.0.0 for every interface) (got '')",
        ),
        ("YAPTIDE_SERVER_PROT", "1", "unknown setting (no such key in config.toml)"),
        (
            "DATABASE_URL",
            "mysql://h/db",
            "must be a postgresql:// URL (or empty for the embedded server)",
        ),
    ],
)
def test_bad_env_values(tmp_path, variable, text, problem):
    assert error_of(tmp_path, **{variable: text}) == f"{variable}: {problem}"


def test_other_yaptide_variables_are_ignored():
    assert load_config(DEFAULT_CONFIG, {"YAPTIDE_SOMETHING_ELSE": "1"}) == Config()


def test_invalid_toml(tmp_path):
    message = error_of(tmp_path, "[server\nport = 1")
    assert message.startswith(f"{tmp_path / 'config.toml'}: not valid TOML (")
    (tmp_path / "config.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "config.toml", {})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", {})
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: cannot read (No such file or directory)"


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[auth]\nsecret = "too short"', {}, "auth.secret"),
        ("", {"YAPTIDE_AUTH_SECRET": "too short"}, "YAPTIDE_AUTH_SECRET"),
        ("[auth]\nsecret = 12345678", {}, "auth.secret"),
        ('[database]\nurl = "http://user:hunter2@h/db"', {}, "database.url"),
    ],
)
def test_secrets_are_not_echoed(tmp_path, toml, env, key):
    message = error_of(tmp_path, toml, **env)
    assert message.startswith(f"{key}: ")
    for secret in ("too short", "12345678", "hunter2"):
        assert secret not in message


def test_short_secret_message(tmp_path):
    assert error_of(tmp_path, '[auth]\nsecret = "too short"') == (
        "auth.secret: must be at least 32 characters (or empty to generate one)"
    )
    assert load_config(write(tmp_path, f'[auth]\nsecret = "{SECRET}"'), {}).auth.secret == SECRET


def run_py(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("YAPTIDE_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(PROJECT / "run.py"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            (),
            {"YAPTIDE_SERVER_PORT": "eighty"},
            "YAPTIDE_SERVER_PORT: expected an integer (got 'eighty')",
        ),
        (("--config", "{bad}"), {}, "server.port: must be between 1 and 65535 (got 0)"),
        (("migrate", "--config", "{bad}"), {}, "server.port: must be between 1 and 65535 (got 0)"),
        # A check across keys, or one made at the start, names the variables that set them.
        (
            ("migrate",),
            {"YAPTIDE_AUTH_COOKIE_SAMESITE": "None", "YAPTIDE_AUTH_SECURE_COOKIES": "no"},
            "auth.cookie_samesite: None needs auth.secure_cookies = true"
            " (set by YAPTIDE_AUTH_COOKIE_SAMESITE, YAPTIDE_AUTH_SECURE_COOKIES)\n",
        ),
        (
            ("migrate",),
            {"YAPTIDE_KEYCLOAK_ISSUER": "https://sso.example.org/realms/PLGrid"},
            "keycloak.client_ids: name at least one client when keycloak.issuer is set"
            " (set by YAPTIDE_KEYCLOAK_ISSUER)\n",
        ),
        (
            ("migrate",),
            {"YAPTIDE_KEYCLOAK_KEY_CACHE_TTL": "1"},
            "keycloak.min_refetch_interval: must not exceed keycloak.key_cache_ttl"
            " (set by YAPTIDE_KEYCLOAK_KEY_CACHE_TTL)\n",
        ),
        *(  # DATABASE_URL wins over YAPTIDE_DATABASE_URL (and database.url)
            (
                ("migrate",),
                {name: "postgresql://u@h:notaport/db", **other},
                f"database.url: cannot be read (is the port a number, every '[' closed, every "
                "parameter's value one PostgreSQL knows (sslmode), and are '@', ':', '/', '?' "
                f"and '#' in the user name and password percent-encoded?) (set by {name})\n",
            )
            for name, other in [
                ("DATABASE_URL", {"YAPTIDE_DATABASE_URL": "postgresql://u@h/db"}),
                ("YAPTIDE_DATABASE_URL", {}),
            ]
        ),
        (
            ("migrate",),
            {"YAPTIDE_DATABASE_DATA_DIR": "/tmp/" + "d" * 100},
            "choose a shorter path, or set database.url (set by YAPTIDE_DATABASE_DATA_DIR)\n",
        ),
    ],
)
def test_cli_bad_value_is_one_line(tmp_path, args, env, line):
    bad = write(tmp_path, "[server]\nport = 0\n")
    result = run_py(*(str(bad) if a == "{bad}" else a for a in args), env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and line in result.stderr
    assert result.stderr.startswith("Configuration error: ")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::"])
async def test_workers_reach_the_server_at_the_url_they_are_given(host):
    """Workers get `http://<host>:<port>` when public_url is empty (README): it must reach a
    server listening on `server.host`, an IPv6 address too (asyncio binds "::" IPv6-only)."""
    import aiohttp
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"message": "Hello World!"})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = Config().replace("server", host=host, port=port).base_url
        async with aiohttp.ClientSession() as session, session.get(url + "/") as response:
            assert response.status == 200
    finally:
        await runner.cleanup()


def test_relative_paths_of_programs_are_from_the_current_directory(tmp_path, monkeypatch):
    """A task's programs run in its own directory: `tools/shieldhit` was looked for there,
    and every task failed ("not found on this machine") although the start succeeded."""
    monkeypatch.chdir(tmp_path)
    env = {
        "YAPTIDE_SIMULATORS_SHIELDHIT": "tools/shieldhit",
        "YAPTIDE_SIMULATORS_FLUKA": "rfluka",
        "YAPTIDE_RUNNER_COMMAND": "./tools/worker.sh --verbose 'a b'",
        "YAPTIDE_RUNNER_CONVERTER": "/opt/converter/run --fast",
    }
    config = load_config(DEFAULT_CONFIG, env)
    assert (config.simulators.shieldhit, config.simulators.fluka) == (
        f"{tmp_path}/tools/shieldhit",
        "rfluka",  # a name: looked up on PATH
    )
    assert config.runner.command == f"{tmp_path}/tools/worker.sh --verbose 'a b'"
    assert config.runner.converter == "/opt/converter/run --fast"
