"""The built-in worker reaching the server over a network as on an HPC node: through the
forward proxy its environment names (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), while the local
runner's own workers reach the server directly whatever proxy the server's environment names."""

import asyncio
import shlex
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.config import PROJECT_DIR, ClusterConfig
from server.proxies import bypassing
from server.runner import Job
from server.runner.slurm.sbatch import array_script
from server.worker.client import ServerClient, Unreachable
from server.worker.settings import load
from tests.fakes.http_proxy import HttpProxy
from tests.fakes.simulators import averaging_payload, write_fake
from tests.helpers import eventually, start_worker_app, states_are, submit
from tests.test_worker import MINIMAL
from tests.test_worker_parts import ENV

RETRY = "YAPTIDE_RUNNER_RETRY_TIMEOUT"
PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def node_command(proxy_url: str) -> str:
    """The built-in worker as a node behind a proxy runs it: its environment names the proxy
    (and no NO_PROXY), whatever the runner gave it."""
    unset = [arg for name in PROXY_NAMES for arg in ("-u", name)]
    proxies = [f"HTTP_PROXY={proxy_url}", f"HTTPS_PROXY={proxy_url}", f"PYTHONPATH={PROJECT_DIR}"]
    return shlex.join(["env", *unset, *proxies, sys.executable, "-m", "server.worker"])


async def test_a_worker_behind_a_proxy_reaches_the_server_through_it(
    aiohttp_server, aiohttp_client, unused_tcp_port_factory, make_config, conn, tmp_path
):
    """HPC compute nodes often reach the outside only through a proxy their environment names
    (the original worker's python-requests followed it); the built-in worker went direct."""
    proxy = HttpProxy()
    proxy_url = str((await aiohttp_server(proxy.app(), auto_decompress=False)).make_url("/"))
    shieldhit = write_fake(tmp_path / "shieldhit", "shieldhit", {"*": MINIMAL})
    port = unused_tcp_port_factory()
    client, _, _ = await start_worker_app(
        aiohttp_server,
        aiohttp_client,
        port,
        make_config,
        {"shieldhit": str(shieldhit)},
        command=node_command(proxy_url),
    )
    job_id = await submit(client, averaging_payload(ntasks=2))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)
    paths = {url.removeprefix(f"http://127.0.0.1:{port}") for url in proxy.forwarded}
    assert paths == {"/tasks", "/logfiles", "/jobs", "/results"}


async def test_local_workers_reach_the_server_directly_despite_the_servers_proxy(
    aiohttp_server,
    aiohttp_client,
    unused_tcp_port_factory,
    make_config,
    conn,
    tmp_path,
    monkeypatch,
):
    """The local runner's workers inherit the server's environment, whose proxy (set for
    Keycloak) may not reach back to this host: here it is not even running."""
    dead = f"http://127.0.0.1:{unused_tcp_port_factory()}"
    for name in PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("https_proxy", dead)
    monkeypatch.setenv("no_proxy", "example.org")
    shieldhit = write_fake(tmp_path / "shieldhit", "shieldhit", {"*": MINIMAL})
    client, _, _ = await start_worker_app(
        aiohttp_server,
        aiohttp_client,
        unused_tcp_port_factory(),
        make_config,
        {"shieldhit": str(shieldhit)},
        retry_timeout=5.0,
    )
    job_id = await submit(client, averaging_payload(ntasks=2))
    await eventually(states_are(client, job_id, "COMPLETED", "COMPLETED"), timeout=60)


@pytest.mark.parametrize(
    ("env", "url", "no_proxy"),
    [
        ({}, "http://127.0.0.1:5000", "127.0.0.1"),
        (
            {"no_proxy": "a.org", "NO_PROXY": "b.org"},
            "https://y.example.org/",
            "b.org,a.org,y.example.org",
        ),
        ({"NO_PROXY": "localhost, ::1"}, "http://[::1]:5000", "localhost,::1"),
        ({"no_proxy": "*"}, "http://127.0.0.1:5000", None),
    ],
)
def test_the_runner_adds_the_servers_host_to_no_proxy(env, url, no_proxy):
    changed = bypassing(env, url)
    if no_proxy is None:
        assert changed == env
    else:
        assert (changed["NO_PROXY"], changed["no_proxy"]) == (no_proxy, no_proxy)


@pytest.mark.parametrize(("host", "exported"), [("", True), ("login.cluster.example.org", False)])
def test_slurm_workers_of_this_host_reach_the_server_directly(
    make_config, monkeypatch, host, exported
):
    """A login-node cluster's jobs get the server's environment (sbatch --export=ALL), with the
    proxy it names for Keycloak: the server's host is in their NO_PROXY, as for local workers.
    A cluster over SSH keeps its own environment."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.org:3128")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    config = make_config(server={"public_url": "http://yaptide.example.org:5000"})
    cluster = ClusterConfig("c", "C", True, host=host, work_dir="/scratch/jobs" if host else "")
    job = Job("job", "shieldhit", "files", 1, (100,), "key", {})
    script = array_script(config, cluster, job, "/scratch/jobs/job", ())
    assert ("export NO_PROXY=yaptide.example.org" in script) is exported
    assert ("export no_proxy=yaptide.example.org" in script) is exported


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 that no CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_a_certificate_not_trusted_fails_at_once_saying_so(aiohttp_server, tmp_path):
    """A server whose certificate the node does not trust was retried for `retry_timeout`
    (600 s by default) of the job's allocation, when no retry can help."""

    server = await aiohttp_server(_accepting(), ssl=self_signed(tmp_path))
    url = f"https://127.0.0.1:{server.port}"
    settings = load({**ENV, "YAPTIDE_URL": url, "YAPTIDE_RUNNER_RETRY_TIMEOUT": "20"})
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        with pytest.raises(Unreachable) as refused:
            await ServerClient(settings, session).update_task(task_state="RUNNING")
    assert time.monotonic() - started < 10
    assert str(refused.value).startswith(
        "POST /tasks: the server's certificate is not trusted here"
    )
    assert str(refused.value).endswith("; SSL_CERT_FILE can name its CA")


async def _post_task(url: str, proxy_env: dict[str, str], monkeypatch) -> None:
    for name in PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in proxy_env.items():
        monkeypatch.setenv(name, value)
    settings = load({**ENV, "YAPTIDE_URL": url, "YAPTIDE_RUNNER_RETRY_TIMEOUT": "3"})
    async with aiohttp.ClientSession() as session:
        await ServerClient(settings, session).update_task(task_state="RUNNING")


def _accepting() -> web.Application:
    async def accept(request: web.Request) -> web.Response:
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/tasks", accept)
    return app


async def test_a_proxy_named_without_a_scheme_is_used_as_curl_and_requests_use_it(
    aiohttp_server, monkeypatch
):
    """`HTTP_PROXY=proxy.example.org:3128` (no `http://`) is common on HPC nodes; curl and
    python-requests take it as an http:// proxy."""
    server = await aiohttp_server(_accepting())
    proxy = HttpProxy()
    proxy_server = await aiohttp_server(proxy.app(), auto_decompress=False)
    url = f"http://127.0.0.1:{server.port}"
    await _post_task(url, {"HTTP_PROXY": f"127.0.0.1:{proxy_server.port}"}, monkeypatch)
    assert proxy.forwarded == [f"{url}/tasks"]


async def test_a_proxy_s_password_is_sent_to_it_and_never_written(
    aiohttp_server, monkeypatch, caplog
):
    """HTTPS_PROXY=http://user:password@host:port: the password goes to the proxy, and no
    longer into every retry's log line (a node's task log, which the SLURM runner copies into
    the owner's log files) when the proxy refuses to connect to an https:// server."""
    server = await aiohttp_server(_accepting())
    proxy = HttpProxy()
    proxy_server = await aiohttp_server(proxy.app(), auto_decompress=False)
    named = f"http://plguser:Pr0xy%20pass@127.0.0.1:{proxy_server.port}"
    await _post_task(f"http://127.0.0.1:{server.port}", {"HTTP_PROXY": named}, monkeypatch)
    assert proxy.authorizations == [aiohttp.encode_basic_auth("plguser", "Pr0xy pass")]
    with pytest.raises(Unreachable) as refused:  # CONNECT refused: what aiohttp says quotes it
        await _post_task("https://yaptide.example.org", {"HTTPS_PROXY": named}, monkeypatch)
    assert "ClientHttpProxyError" in str(refused.value)
    assert [r for r in caplog.records if "Pr0xy" in r.getMessage()] == []
    assert "Pr0xy" not in str(refused.value) and "plguser" not in str(refused.value)


async def test_no_proxy_may_name_a_network_as_curl_and_requests_read_it(
    aiohttp_server, unused_tcp_port_factory, monkeypatch
):
    """`NO_PROXY=10.0.0.0/8` (a site's own network) is honoured by curl and python-requests: the
    server on it is reached directly, not through a proxy that may not reach it."""
    server = await aiohttp_server(_accepting())
    dead = f"http://127.0.0.1:{unused_tcp_port_factory()}"
    env = {"HTTP_PROXY": dead, "NO_PROXY": "127.0.0.0/8"}
    await _post_task(f"http://127.0.0.1:{server.port}", env, monkeypatch)


async def test_a_server_that_never_answers_is_given_up_on_after_retry_timeout(aiohttp_server):
    """A server that takes the request and never answers (frozen, a network cut with no reset):
    each attempt waited up to 300 s for the answer, whatever retry_timeout said (a task was
    held about 15 minutes with the default 600 s)."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"message": "late"}, status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    settings = load({**ENV, "YAPTIDE_URL": str(server.make_url("")), **{RETRY: "1"}})
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(Unreachable, match="failed for 1 s, last: "):
                await asyncio.wait_for(ServerClient(settings, session).update_job("FAILED"), 10)
    finally:
        release.set()
    assert time.monotonic() - started < 3
