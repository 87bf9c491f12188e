"""The forward proxy the environment names (HTTPS_PROXY, HTTP_PROXY; NO_PROXY honoured), as curl
and python-requests read them, for the server's Keycloak client and for the worker.

Nothing else of the environment is followed: aiohttp's trust_env would also send the account's
~/.netrc credentials to whatever host is asked."""

import base64
import ipaddress
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from yarl import URL

NO_PROXY_NAMES = ("NO_PROXY", "no_proxy")


def request_options(url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiohttp's options for a request to `url` with `headers`: through the proxy the
    environment names for it, if any. The proxy's user and password are taken out of its URL
    and sent as a Proxy-Authorization header (on the CONNECT to an https:// URL, else on the
    request itself, which the proxy reads), so that no error message or log line that quotes
    the proxy's URL (aiohttp's do) carries the password."""
    options: dict[str, Any] = {"headers": dict(headers or {})}
    proxy = _proxy_for(url)
    if proxy is None:
        return options
    options["proxy"] = str(proxy.with_user(None))
    if proxy.user is not None:
        credentials = f"{proxy.user}:{proxy.password or ''}".encode()
        authorization = {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}
        if urlsplit(url).scheme == "https":
            options["proxy_headers"] = authorization
        else:
            options["headers"].update(authorization)
    return options


def _proxy_for(url: str) -> URL | None:
    """The proxy the environment names for `url`, or None to go direct. One named without a
    scheme (`proxy.example.org:3128`) is an http:// proxy, as curl and python-requests take it."""
    host = urlsplit(url).hostname
    if host is None or urllib.request.proxy_bypass(host) or _in_listed_network(host):
        return None
    named = urllib.request.getproxies().get(urlsplit(url).scheme)
    return URL(f"http://{named}" if "://" not in named else named) if named else None


def _in_listed_network(host: str) -> bool:
    """Whether `host` is an address in a network NO_PROXY lists (`10.0.0.0/8`), which curl and
    python-requests honour and urllib does not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for part in urllib.request.getproxies().get("no", "").split(","):
        try:
            if address in ipaddress.ip_network(part.strip(), strict=False):
                return True
        except ValueError:  # a host name, or not a network
            continue
    return False


def bypassing(env: Mapping[str, str], url: str) -> dict[str, str]:
    """`env` with the host of `url` added to its NO_PROXY, under both names (Python reads the
    lower-case one first, other programs the upper-case one): that host is reached directly."""
    host = urlsplit(url).hostname
    listed = [part.strip() for name in NO_PROXY_NAMES for part in env.get(name, "").split(",")]
    if host is None or "*" in listed:
        return dict(env)
    hosts = list(dict.fromkeys(part for part in [*listed, host] if part))
    return {**env, **dict.fromkeys(NO_PROXY_NAMES, ",".join(hosts))}
