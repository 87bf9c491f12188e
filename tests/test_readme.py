"""README.md documents every configuration key, every route, every module, and the two commands."""

import dataclasses
import re
import tomllib
from pathlib import Path

from server.app import create_app
from server.config import SECTIONS, Config
from server.config_loader import env_name

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def table_rows(first_cell: str) -> list[list[str]]:
    """The cells of every README table row whose first cell matches `first_cell`."""
    rows = []
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows.append(cells)
    return rows


def test_configuration_table_lists_every_key():
    rows = {cells[0].strip("`"): cells for cells in table_rows(r"`\w+\.\w+`")}
    keys = {
        f"{name}.{field.name}": (name, field)
        for name, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
    }
    assert list(rows) == list(keys)
    for key, (section, field) in keys.items():
        assert rows[key][1].startswith(f"`{env_name(section, field.name)}`"), key
        default = tomllib.loads(f"value = {rows[key][2].strip('`')}")["value"]
        assert default == field.default and type(default) in (field.type, int), key


def test_api_table_lists_every_route():
    app = create_app(Config())
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(cells[0], cells[1].strip("`")) for cells in table_rows(r"GET|PUT|POST|DELETE")}
    assert documented == routes


def test_the_two_commands_come_first():
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.DOTALL)
    assert commands[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python run.py",
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
        ".venv/bin/python -m pytest",
    ]


def test_development_map_names_every_module():
    """Each module of server/ appears in the Development map, by its path or in its folder's line."""
    section = README.split("## Development\n", 1)[1].split("\n## ", 1)[0]
    server = ROOT / "server"
    missing = []
    for path in sorted(server.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" or relative in section:
            continue
        folder_line = next(
            (
                line
                for line in section.splitlines()
                if line.startswith(f"{path.parent.relative_to(ROOT).as_posix()}/ ")
            ),
            "",
        )
        if path.stem not in folder_line:
            missing.append(relative)
    assert missing == []


def test_the_nginx_example_lets_every_body_the_server_takes_through():
    """nginx refuses a body over its `client_max_body_size` (1 MiB unless set) itself, in HTML
    and without CORS headers: a worker's results over 1 MiB behind it failed its simulation."""
    blocks = re.findall(r"```nginx\n(.*?)\n```", README, re.DOTALL)
    assert blocks, "no nginx example in README.md"
    found = re.search(r"client_max_body_size\s+(\d+)([kmg]?);", blocks[0], re.IGNORECASE)
    assert found, "the nginx example keeps nginx's 1 MiB body limit"
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[found[2].lower()]
    limit = int(found[1]) * scale
    server = Config().server
    assert limit == 0 or limit >= max(server.max_body_size, server.worker_max_body_size)


def test_the_nginx_example_waits_for_the_servers_own_503():
    """nginx answers an HTML 504 after `proxy_read_timeout` (60 s unless set); a frozen database's
    JSON 503 comes within twice `database.command_timeout` (120 s measured behind nginx)."""
    block = re.findall(r"```nginx\n(.*?)\n```", README, re.DOTALL)[0]
    found = re.search(r"proxy_read_timeout\s+(\d+)s?;", block)
    assert found, "the nginx example keeps nginx's 60 s proxy_read_timeout"
    assert int(found[1]) > 2 * Config().database.command_timeout
