"""How a `GET /results` answer is represented: gzip or identity, and ETag / 304 for results that
can no longer change."""

import functools
import hashlib

from server.jobs.states import TERMINAL_STATES
from server.store.simulations import ResultsHead


@functools.lru_cache(maxsize=256)  # clients send a few distinct values, again and again
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header value takes gzip (q=0 refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            return q not in ("0", "0.0", "0.00", "0.000")
    return False


def etag_for(head: ResultsHead, selection: object, gzip: bool) -> str | None:
    """Results of a terminal job never change (its update key is dead): they get an ETag, one
    per simulation, results version (new with every upload), selection of pages and encoding."""
    if head.job_state not in TERMINAL_STATES:
        return None
    tag = f"{head.sim_pk}|{head.end_time}|{head.results_version}|{selection!r}|{gzip}".encode()
    return '"' + hashlib.blake2b(tag, digest_size=12).hexdigest() + '"'


def headers_for(etag: str | None, gzip: bool) -> dict[str, str]:
    """The response headers of one representation (a 304 sends the same ones)."""
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    if etag:
        headers["ETag"] = etag
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return headers


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header value names `etag` (or is `*`)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
