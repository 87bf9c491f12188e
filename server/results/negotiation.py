"""How a `GET /results` answer is represented: gzip or identity, and ETag / 304 for results that
can no longer change."""

import hashlib
from datetime import datetime

from server.jobs.states import TERMINAL_STATES


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header value takes gzip (q=0 refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            return q not in ("0", "0.0", "0.00", "0.000")
    return False


def etag_for(
    sim_pk: int, job_state: str, end_time: datetime | None, query: str, gzip: bool
) -> str | None:
    """Results of a terminal job never change (its update key is dead): they get an ETag."""
    if job_state not in TERMINAL_STATES:
        return None
    tag = f"{sim_pk}|{end_time}|{query}|{gzip}".encode()
    return '"' + hashlib.blake2b(tag, digest_size=12).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header value names `etag` (or is `*`)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
