"""The [keycloak] section: its keys from the file and the environment, and the checks across keys."""

import json
from pathlib import Path

import pytest

from server.config import ConfigError, KeycloakConfig
from server.config_loader import load_config

ISSUER = "https://sso.example.org/realms/PLGrid"


def load(tmp_path: Path, toml: str, **env: str) -> KeycloakConfig:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return load_config(path, env).keycloak


def error_of(tmp_path: Path, toml: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, **env)
    return str(info.value)


def test_off_by_default(tmp_path):
    assert load(tmp_path, "") == KeycloakConfig()
    assert KeycloakConfig().issuer == ""


def test_from_the_file(tmp_path):
    toml = f"""
[keycloak]
issuer = "{ISSUER}/"
client_ids = " yaptide-backend, yaptide-ui ,"
access_claim = "groups"
access_value = "yaptide"
key_cache_ttl = 600
min_refetch_interval = 30
timeout = 2.5
leeway = 0
"""
    settings = load(tmp_path, toml)
    assert settings == KeycloakConfig(
        issuer=f"{ISSUER}/",
        client_ids=" yaptide-backend, yaptide-ui ,",
        access_claim="groups",
        access_value="yaptide",
        key_cache_ttl=600.0,
        min_refetch_interval=30.0,
        timeout=2.5,
        leeway=0.0,
    )
    assert settings.accepted_clients == {"yaptide-backend", "yaptide-ui"}
    assert settings.issuer_url == ISSUER  # as Keycloak writes it in "iss"


def test_from_the_environment(tmp_path):
    env = {
        "YAPTIDE_KEYCLOAK_ISSUER": ISSUER,
        "YAPTIDE_KEYCLOAK_CLIENT_IDS": "yaptide-backend",
        "YAPTIDE_KEYCLOAK_TIMEOUT": "1.5",
        "YAPTIDE_KEYCLOAK_ACCESS_CLAIM": "",
    }
    settings = load(tmp_path, '[keycloak]\nissuer = "http://other"\nclient_ids = "x"\n', **env)
    assert (settings.issuer, settings.client_ids, settings.timeout, settings.access_claim) == (
        ISSUER,
        "yaptide-backend",
        1.5,
        "",
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            f'issuer = "{ISSUER}"',
            "keycloak.client_ids: name at least one client when keycloak.issuer is set",
        ),
        (
            f'issuer = "{ISSUER}"\nclient_ids = " , "',
            "keycloak.client_ids: name at least one client when keycloak.issuer is set",
        ),
        (
            'issuer = "sso.example.org/realms/PLGrid"\nclient_ids = "a"',
            "keycloak.issuer: must be an http:// or https:// URL with a host (or empty) "
            "(got 'sso.example.org/realms/PLGrid')",
        ),
        *(
            (
                f"issuer = {json.dumps(issuer)}\nclient_ids = 'a'",
                f"keycloak.issuer: must be an http:// or https:// URL with a host (or empty) "
                f"(got {issuer!r})",
            )
            for issuer in (
                "https://",
                "https://sso.example.org/realms/PLGrid\n",  # a secret file's last line
                "https://sso.example.org/realms/PLGrid ",
                "https://sso.example.org:99999/realms/PLGrid",
            )
        ),
        (
            "issuer = 'https://sso.example.org/realms/PLGrid?x=1'\nclient_ids = 'a'",
            "keycloak.issuer: must not have a query or a fragment: paths are added to it "
            "(got 'https://sso.example.org/realms/PLGrid?x=1')",
        ),
        ("timeout = 0", "keycloak.timeout: must be greater than 0 (got 0.0)"),
        ("key_cache_ttl = -1", "keycloak.key_cache_ttl: must be greater than 0 (got -1.0)"),
        ("leeway = -1", "keycloak.leeway: must be 0 or more (got -1.0)"),
        (
            "key_cache_ttl = 5\nmin_refetch_interval = 10",
            "keycloak.min_refetch_interval: must not exceed keycloak.key_cache_ttl",
        ),
        ('client_id = "a"', "keycloak.client_id: unknown key"),
        ("client_ids = 1", "keycloak.client_ids: expected a string (got 1)"),
    ],
)
def test_bad_values(tmp_path, toml, message):
    assert error_of(tmp_path, f"[keycloak]\n{toml}\n") == message


def test_bad_environment_value(tmp_path):
    message = error_of(tmp_path, "", YAPTIDE_KEYCLOAK_TIMEOUT="soon")
    assert message == "YAPTIDE_KEYCLOAK_TIMEOUT: expected a number (got 'soon')"
