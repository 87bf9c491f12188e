"""The forward proxy the environment names (HTTPS_PROXY, HTTP_PROXY; NO_PROXY honoured), as curl
and python-requests read them, for the server's Keycloak client and for the worker.

Nothing else of the environment is followed: aiohttp's trust_env would also send the account's
~/.netrc credentials to whatever host is asked."""

import ipaddress
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

NO_PROXY_NAMES = ("NO_PROXY", "no_proxy")


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url`, or None to go direct. One named without a
    scheme (`proxy.example.org:3128`) is an http:// proxy, as curl and python-requests take it."""
    host = urlsplit(url).hostname
    if host is None or urllib.request.proxy_bypass(host) or _in_listed_network(host):
        return None
    proxy = urllib.request.getproxies().get(urlsplit(url).scheme)
    return f"http://{proxy}" if proxy and "://" not in proxy else proxy


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
