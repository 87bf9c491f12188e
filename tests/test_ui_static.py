"""The built UI served by the server (`[ui] static_dir`), with a small bundle made here."""

import gzip
from pathlib import Path

import aiohttp
import orjson
import pytest

from server.app import create_app
from server.config import ConfigError

INDEX = b"<!doctype html><title>YAPTIDE</title><div id=root></div>"
GZ = gzip.compress(b"// gz\n", mtime=0)
SCRIPT = b"console.log('main');\n" * 50
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NOT_FOUND = (404, {"message": "Not found"})


def make_bundle(root: Path) -> None:
    """A CRA-like build: index.html, a hashed script with precompressed siblings, a manifest.
    The siblings differ from the plain file, so a test can see which one was sent."""
    (root / "static" / "js").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "manifest.json").write_bytes(b'{"name": "YAPTIDE"}')
    script = root / "static" / "js" / "main.3f2a9c1d.js"
    script.write_bytes(SCRIPT)
    (root / "static" / "js" / "main.3f2a9c1d.js.gz").write_bytes(GZ)
    (root / "static" / "js" / "main.3f2a9c1d.js.br").write_bytes(b"not really brotli")
    (root / ".env").write_bytes(b"SECRET=1")
    (root.parent / "outside.txt").write_bytes(b"outside the bundle")


@pytest.fixture
async def site(aiohttp_client, make_config, conn, tmp_path):
    root = tmp_path / "build"
    root.mkdir()
    make_bundle(root)
    return await aiohttp_client(create_app(make_config(ui={"static_dir": str(root)})))


async def json_of(response) -> tuple[int, dict]:
    return response.status, orjson.loads(await response.read())


async def test_root_is_index_for_a_browser_and_json_for_api_clients(site):
    response = await site.get("/", headers=BROWSER)
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.read() == INDEX
    for accept in ("*/*", "application/json", None):
        response = await site.get("/", headers={"Accept": accept} if accept else {})
        status, body = await json_of(response)
        assert (status, body["message"]) == (200, "Hello World!")


async def test_hashed_assets_are_immutable_other_files_revalidated(site):
    response = await site.get("/static/js/main.3f2a9c1d.js", headers={"Accept-Encoding": ""})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "javascript" in response.content_type
    assert await response.read() == SCRIPT
    response = await site.get("/manifest.json")
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.read() == b'{"name": "YAPTIDE"}'
    again = await site.get("/manifest.json", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize(
    ("accept_encoding", "encoding", "body"),
    [
        ("gzip", "gzip", GZ),
        ("gzip, deflate, br", "br", b"not really brotli"),
        ("identity", None, SCRIPT),
    ],
)
async def test_precompressed_files_when_accepted(site, accept_encoding, encoding, body):
    url = site.make_url("/static/js/main.3f2a9c1d.js")
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        response = await session.get(url, headers={"Accept-Encoding": accept_encoding})
        assert response.status == 200
        assert response.headers.get("Content-Encoding") == encoding
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Accept-Encoding" in response.headers["Vary"]
        assert await response.read() == body


async def test_client_routes_fall_back_to_index(site):
    for path in ("/simulations", "/results/view", "/editor/"):
        response = await site.get(path, headers=BROWSER)
        assert (response.status, await response.read()) == (200, INDEX)
        assert response.headers["Cache-Control"] == "no-cache"
    head = await site.head("/simulations", headers=BROWSER)
    assert (head.status, head.content_type) == (200, "text/html")


async def test_api_and_dialect_are_never_shadowed(site):
    # API routes answer as always, even to a browser.
    response = await site.get("/results?job_id=x", headers=BROWSER)
    assert await json_of(response) == (401, {"message": "No token provided"})
    # Unknown paths: JSON 404 for API clients, for missing files, and under the dialect.
    for path, headers in [
        ("/simulations", {"Accept": "*/*"}),
        ("/simulations", {"Accept": "application/json"}),
        ("/static/js/missing.js", BROWSER),
        ("/ui/simulations", BROWSER),
        ("/ui", BROWSER),
        ("/ui/static/js/main.3f2a9c1d.js", {}),
    ]:
        assert await json_of(await site.get(path, headers=headers)) == NOT_FOUND, path
    # Other methods are as without a bundle: 404 where no route is, 405 where one is.
    assert await json_of(await site.post("/simulations", headers=BROWSER)) == NOT_FOUND
    assert await json_of(await site.put("/results", headers=BROWSER)) == (
        405,
        {"message": "Method not allowed"},
    )


async def test_nothing_outside_the_bundle_nor_hidden(site):
    for path in ("/.env", "/static/../.env", "/%2e%2e/outside.txt", "/../outside.txt"):
        assert await json_of(await site.get(path)) == NOT_FOUND, path


async def test_without_a_bundle_a_browser_gets_json(client):
    status, body = await json_of(await client.get("/", headers=BROWSER))
    assert (status, body["message"]) == (200, "Hello World!")
    assert await json_of(await client.get("/simulations", headers=BROWSER)) == NOT_FOUND


async def test_paths_the_file_system_refuses_are_not_found(site):
    """A NUL byte or a segment longer than a file name may be (255 bytes) is no file of the
    bundle: a 404 (index.html for a browser's client route), never a 500."""
    for path in ("/%00", "/static/js/a%00.js", "/" + "a" * 300, "/static/js/" + "b" * 300 + ".js"):
        assert await json_of(await site.get(path)) == NOT_FOUND, path
    response = await site.get("/" + "a" * 300, headers=BROWSER)
    assert (response.status, await response.read()) == (200, INDEX)


@pytest.mark.parametrize(
    ("made", "problem"), [(False, "does not exist"), (True, "is not a directory")]
)
async def test_a_static_dir_that_is_no_directory_is_refused_at_start(
    aiohttp_client, make_config, tmp_path, made, problem
):
    """A mistyped `static_dir` started a server with no UI and no word of it."""
    path = tmp_path / "build"
    if made:
        path.write_bytes(INDEX)  # a file, not the directory holding it
    with pytest.raises(ConfigError) as refused:
        await aiohttp_client(create_app(make_config(ui={"static_dir": str(path)})))
    assert str(refused.value) == f"ui.static_dir: {path} {problem}"
