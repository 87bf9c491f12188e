"""The `[ui]` keys and the cookie settings a cross-site deployment of the UI needs."""

from pathlib import Path

import pytest

from server.app import create_app
from server.config import ConfigError, UiConfig
from server.config_loader import load_config
from tests.helpers import register


def load(tmp_path: Path, toml: str, **env: str):
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return load_config(path, env)


def test_ui_keys_from_file_and_environment(tmp_path):
    toml = '[ui]\napi_prefix = "/api/ui"\nallowed_origins = "http://localhost:3000"\n'
    config = load(tmp_path, toml, YAPTIDE_UI_STATIC_DIR="/srv/ui/build")
    assert config.ui == UiConfig(
        api_prefix="/api/ui", allowed_origins="http://localhost:3000", static_dir="/srv/ui/build"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[ui]\napi_prefix = "ui"',
            "ui.api_prefix: must be a path like /ui (segments of letters, digits, '.', '_', '~',"
            " '-') (got 'ui')",
        ),
        (
            '[ui]\napi_prefix = "/ui/"',
            "ui.api_prefix: must be a path like /ui (segments of letters, digits, '.', '_', '~',"
            " '-') (got '/ui/')",
        ),
        (
            '[ui]\nallowed_origins = "http://a.example, https://b.example/app"',
            "ui.allowed_origins: 'https://b.example/app' is not an origin like"
            " https://ui.example.org or http://localhost:3000"
            " (got 'http://a.example, https://b.example/app')",
        ),
        (
            '[ui]\nallowed_origins = "*"',
            "ui.allowed_origins: '*' is not an origin like https://ui.example.org or"
            " http://localhost:3000 (got '*')",
        ),
        (
            '[ui]\nallowed_origins = "https://UI.example.org"',
            "ui.allowed_origins: browsers send 'https://UI.example.org' as"
            " 'https://ui.example.org': write it that way (got 'https://UI.example.org')",
        ),
        (
            '[ui]\nallowed_origins = "http://localhost:3000 https://ui.example.org:443"',
            "ui.allowed_origins: browsers send 'https://ui.example.org:443' as"
            " 'https://ui.example.org': write it that way"
            " (got 'http://localhost:3000 https://ui.example.org:443')",
        ),
        (
            '[auth]\ncookie_samesite = "none"',
            "auth.cookie_samesite: must be one of: Lax, Strict, None (got 'none')",
        ),
        (
            '[auth]\ncookie_samesite = "None"',
            "auth.cookie_samesite: None needs auth.secure_cookies = true",
        ),
    ],
)
def test_bad_values(tmp_path, toml, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert str(info.value) == message


async def test_cross_site_cookies(aiohttp_client, make_config, conn):
    config = make_config(auth={"secure_cookies": True, "cookie_samesite": "None"})
    client = await aiohttp_client(create_app(config))
    await register(client)
    body = {"username": "alice", "password": "password1"}
    response = await client.post("/ui/auth/login", json=body)
    assert response.status == 202
    for cookie in response.cookies.values():
        assert (cookie["samesite"], cookie["secure"], cookie["path"]) == ("None", True, "/")
    response = await client.delete("/ui/auth/logout")
    for cookie in response.cookies.values():  # cleared with the same attributes
        assert (cookie["samesite"], cookie["secure"], cookie["max-age"]) == ("None", True, "0")


@pytest.mark.parametrize(("samesite", "partitioned"), [("None", True), ("Lax", False)])
async def test_cross_site_cookies_are_partitioned(
    aiohttp_client, make_config, conn, samesite, partitioned
):
    """A browser that blocks third-party cookies (Safari; Chromium's default, seen with the real
    UI behind nginx on another site: "Logged in.", then 401 on every call) drops a cross-site
    cookie unless it is Partitioned; a Lax one stays unpartitioned."""
    config = make_config(auth={"secure_cookies": True, "cookie_samesite": samesite})
    client = await aiohttp_client(create_app(config))
    await register(client)
    body = {"username": "alice", "password": "password1"}
    response = await client.post("/ui/auth/login", json=body)
    assert response.status == 202
    for answer in (response, await client.delete("/ui/auth/logout")):
        lines = answer.headers.getall("Set-Cookie")
        assert len(lines) == 2
        assert all(line.endswith("; Partitioned") == partitioned for line in lines), lines


async def test_the_dialect_under_another_prefix(aiohttp_client, make_config, conn):
    client = await aiohttp_client(create_app(make_config(ui={"api_prefix": "/api/v1"})))
    assert (await client.get("/api/v1/")).status == 200
    assert (await client.get("/ui/")).status == 404
