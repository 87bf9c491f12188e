"""How a `GET /results` answer is represented: gzip or identity, and ETag / 304 for results that
can no longer change."""

import functools
import hashlib

from multidict import CIMultiDictProxy

from server.jobs.states import TERMINAL_STATES
from server.store.simulations import ResultsHead


def _weight(params: list[str]) -> float:
    """The q of a coding's parameters: 1 without one (or with one that is not a number)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


# Values up to this long have their answer remembered: clients send a few distinct ones, again
# and again. Longer ones (up to 128 header lines of 8 KB, ~1 MB) are the client's own making:
# parsed every time, never kept.
CACHED_UP_TO = 256


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value (every header line joined by commas) takes gzip: the
    weight of gzip (or x-gzip) if named, else of `*`; q=0 refuses it."""
    if len(accept_encoding) > CACHED_UP_TO:
        return _accepts_gzip(accept_encoding)
    return _remembered(accept_encoding)


def _accepts_gzip(accept_encoding: str) -> bool:
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        weights.setdefault(coding.strip().lower(), _weight(params))
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


_remembered = functools.lru_cache(maxsize=256)(_accepts_gzip)


def etag_for(head: ResultsHead, selection: object, gzip: bool) -> str | None:
    """Results of a terminal job never change (its update key is dead): they get an ETag, one
    per simulation, results version (new with every upload), selection of pages and encoding."""
    if head.job_state not in TERMINAL_STATES:
        return None
    tag = f"{head.sim_pk}|{head.end_time}|{head.results_version}|{selection!r}|{gzip}".encode()
    return '"' + hashlib.blake2b(tag, digest_size=12).hexdigest() + '"'


def headers_for(etag: str | None, gzip: bool) -> dict[str, str]:
    """The response headers of one representation (a 304 sends the same ones)."""
    # A user's data behind a cookie: no shared cache may keep it; the user's own revalidates.
    headers = {
        "Content-Type": "application/json",
        "Vary": "Accept-Encoding",
        "Cache-Control": "private, no-cache",
    }
    if etag:
        headers["ETag"] = etag
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return headers


def field(headers: CIMultiDictProxy[str], name: str) -> str:
    """A header sent over any number of lines, as the one list it is (RFC 9110, 5.3); "" when
    not sent (then nothing is joined: the common case on the hot path)."""
    return ",".join(headers.getall(name)) if name in headers else ""


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header value names `etag` (or is `*`)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
