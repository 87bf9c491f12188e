"""A server process's result stores (its pool, caches, inflater thread and body files) as
server.results.fetch.render takes them, and what a simulation's end does to its results: a large
body is written to its body file."""

import logging

from aiohttp import web

from server.jobs.states import TERMINAL_STATES
from server.keys import BODY_CACHE, BODY_FILES, INFLATER, PAGE_CACHE, POOL, RESULTS_INDEX
from server.results.caches.pagecache import NOTHING_READ, Read
from server.results.fetch import render

log = logging.getLogger(__name__)


def stores_of(app: web.Application, read: Read = NOTHING_READ) -> render.Stores:
    return render.Stores(
        app[POOL], app[PAGE_CACHE], app[BODY_CACHE], app[INFLATER], app[BODY_FILES], read
    )


async def write_when_finished(app: web.Application, job_id: str, state: str) -> None:
    """A simulation that has just finished (`state`) gets its results' body file, if large
    (written in the background). The worker's change is committed whatever happens here."""
    if state not in TERMINAL_STATES:
        return
    try:
        entry = await app[RESULTS_INDEX].get(app[POOL], job_id)
        if entry is not None and entry.has_results:
            await render.write_file(entry.view(None, None), stores_of(app))
    except Exception as exc:  # the database failing now: the file is written on a fetch instead
        log.warning("no body file for %s yet (%s: %s)", job_id, type(exc).__name__, exc)
