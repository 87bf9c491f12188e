"""Who may touch a simulation: its owner (user endpoints) or a holder of its update key (workers)."""

import hashlib
import hmac
import re
import secrets
from typing import Any, Protocol, TypeVar

from aiohttp import web

from server import values
from server.errors import BadRequest, Forbidden, NotFound
from server.jobs.states import TERMINAL_STATES, check_open
from server.keys import BODY_BUDGET, CONFIG, POOL, USER
from server.limits.bodies import hold_for_parsing, read_body
from server.limits.budget import KEY_CHECKED
from server.limits.pauses import Pauses
from server.parsing import bearer_token, parse_json, query_param
from server.store import simulations
from server.store.simulations import Owner

NOT_FOUND = "Simulation not found"
NOT_OWNER = "Simulation belongs to another user"
BAD_KEY = "Invalid update key"
PRECHECK_ABOVE = 64 * 1024  # bytes of a plain body read before its header key is checked


def key_digest(key: str) -> bytes:
    """What is stored of an update key: its SHA-256."""
    return hashlib.sha256(key.encode()).digest()


def new_update_key() -> tuple[str, bytes]:
    """A fresh update key, for its workers, and its digest, to store."""
    key = secrets.token_urlsafe(32)
    return key, key_digest(key)


class KeyedRow(Protocol):
    """A locked simulation row as the worker checks need it."""

    @property
    def job_state(self) -> str: ...

    @property
    def update_key_sha256(self) -> bytes: ...


class OwnedRow(Protocol):
    """Anything read about a simulation together with its owner."""

    @property
    def user_id(self) -> int: ...


R = TypeVar("R", bound=KeyedRow)
Found = TypeVar("Found", bound=OwnedRow)


def check_owner(found: Found | None, user_id: int) -> Found:
    """What was found about a simulation, when `user_id` owns it; 404 when nothing was found,
    403 when it belongs to someone else."""
    if found is None:
        raise NotFound(NOT_FOUND)
    if found.user_id != user_id:
        raise Forbidden(NOT_OWNER)
    return found


async def owned_simulation(request: web.Request) -> Owner:
    """The simulation named by `?job_id=`, checked to belong to the current user."""
    job_id = query_param(request, "job_id")
    owner = await simulations.get_owner(request.app[POOL], job_id)
    return check_owner(owner, request[USER].id)


NOT_SSO = "Local users cannot access HPC clusters"


def check_cluster_user(request: web.Request) -> None:
    """HPC clusters are for SSO users, and for local users when [slurm] local_users is on."""
    if request[USER].source != "keycloak" and not request.app[CONFIG].slurm.local_users:
        raise Forbidden(NOT_SSO)


def update_key_of(request: web.Request, body: dict[str, Any]) -> str:
    """The worker's update key: `Authorization: Bearer` when sent, else `update_key` in the
    body. The header wins as it does before the body is read (check_header_key), so a request
    is judged by the same key whatever its body's size and encoding."""
    key = bearer_token(request)
    if key is None:
        key = body.get("update_key")
    if not isinstance(key, str) or not key:
        raise Forbidden(BAD_KEY)
    return key


async def check_header_key(request: web.Request) -> None:
    """403 before the body is read when the header's key belongs to no simulation: a stranger's
    body is never buffered; 409 when its job has ended, as the full check would answer. (A key
    in the body can only be checked once the body is read.)

    Small plain bodies (most progress reports) are read first: buffering them costs less than
    the extra query, and the key is checked with the body's simulation anyway.
    """
    key = bearer_token(request)
    small = request.content_length is not None and request.content_length <= PRECHECK_ABOVE
    if key is None or (small and "Content-Encoding" not in request.headers):
        return
    digest = key_digest(key)
    state = await simulations.update_key_state(request.app[POOL], digest)
    if state is None:
        raise Forbidden(BAD_KEY)
    check_open(state)  # the key of a job that has ended: 409, as once the body is read
    request[KEY_CHECKED] = True  # a known sender: its body may use the whole budget


# `"update_key": "<key>"` anywhere in a raw body (JSON strings hold no raw quote, so this is a
# member of some object), and the same without the value, to count escaped keys too.
_BODY_KEY = re.compile(rb'"update_key"\s*:\s*"([^"\\]{1,256})"')
_BODY_KEY_NAME = re.compile(rb'"update_key"\s*:')
# Where a member may begin: looked for a window at a time; one whose blanks run past the window
# (its end there, `\Z`) is looked at whole.
_MEMBER_START = re.compile(rb'"update_key"\s*(?::|\Z)')
_WINDOW = 16 << 20  # bytes looked through between two pauses (two scans of 425 MB took 0.5 s)
_MAX_CANDIDATES = 8


async def _key_members(body: bytes | bytearray) -> tuple[list[bytes], int]:
    """The values of the body's `"update_key": "..."` members, and how many `"update_key":`
    members it has, as `finditer` of _BODY_KEY and of _BODY_KEY_NAME finds them (each up to
    one more than _MAX_CANDIDATES): a window at a time, with pauses (server/limits/pauses.py)."""
    candidates: list[bytes] = []
    named, key_end, start, pauses = 0, 0, 0, Pauses()
    while start < len(body) and named <= _MAX_CANDIDATES:
        end = start + _WINDOW
        for found in _MEMBER_START.finditer(body, start, end + len(b'"update_key"')):
            at = found.start()
            if at >= end or named > _MAX_CANDIDATES:
                break
            if _BODY_KEY_NAME.match(body, at) is None:
                continue
            named += 1
            key = _BODY_KEY.match(body, at) if at >= key_end else None  # finditer: no overlap
            if key is not None:
                candidates.append(key.group(1))
                key_end = key.end()
        start = end
        await pauses()
    return candidates, named


async def check_body_key(request: web.Request, body: bytes | bytearray) -> None:
    """403 before a large body is parsed (parsing takes several times its size in memory) when
    it names no update key that could update a simulation.

    Every `"update_key": "..."` member of the raw body is a candidate: the top-level one, if
    any, is among them, so when none is any simulation's the body's key is wrong (one of a job
    that has ended is parsed, for the full check's 409). When the body is small,
    the key comes in a header, or a candidate is escaped or there are many, parsing decides:
    then (a stranger's body, as far as is known) its parse is held from the budget first.
    """
    if len(body) <= PRECHECK_ABOVE or bearer_token(request) is not None:
        return
    candidates, named = await _key_members(body)
    if not candidates or len(candidates) != named or len(candidates) > _MAX_CANDIDATES:
        await hold_for_parsing(request, body)
        return
    pool = request.app[POOL]
    ended = False
    for key in candidates:
        state = await simulations.update_key_state(pool, hashlib.sha256(key).digest())
        if state is not None and state not in TERMINAL_STATES:
            await request.app[BODY_BUDGET].trust(request)  # a known sender, as a header key's
            return
        ended = ended or state is not None
    if not ended:
        raise Forbidden(BAD_KEY)
    # The key of a job that has ended (or a decoy naming one): parsing decides, 409 or 403.
    await hold_for_parsing(request, body)


def job_id_of(body: dict[str, Any]) -> str:
    """The job_id a worker names, which the worker protocol calls `simulation_id`."""
    job_id = body.get("simulation_id")
    if job_id is None or job_id == "":
        raise BadRequest("Missing field: simulation_id")
    if not isinstance(job_id, str):
        raise BadRequest("Field simulation_id must be of type string")
    return values.text(job_id, "simulation_id")


def check_worker(row: R | None, key: str) -> R:
    """The row (fetched under the simulation's row lock) once the worker may write to it.

    404 unknown simulation, 403 wrong key (compared in constant time), 409 terminal job.
    """
    if row is None:
        raise NotFound(NOT_FOUND)
    digest = key_digest(key)
    if not hmac.compare_digest(digest, row.update_key_sha256):
        raise Forbidden(BAD_KEY)
    check_open(row.job_state)
    return row


async def read_worker_body(request: web.Request) -> bytearray:
    """A worker's raw body, read only if a key in its header looks live, and returned only if
    one in it does (see check_header_key and check_body_key)."""
    await check_header_key(request)
    raw = await read_body(request, request.app[CONFIG].server.worker_max_body_size)
    await check_body_key(request, raw)
    return raw


async def read_worker_json(request: web.Request) -> dict[str, Any]:
    """A worker's body (`/tasks`, `/jobs`, `/logfiles`) as a JSON object, its parse held from
    the budget as a user's is: within its limit a body of nested arrays takes ~30 times its
    size in Python objects (a worker's key is not a reason to trust its body's shape)."""
    raw = await read_worker_body(request)
    await hold_for_parsing(request, raw, pauses=Pauses())  # counted with pauses: 0.6 s for 200 MB
    return parse_json(raw)
