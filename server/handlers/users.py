"""User endpoints: simulation list and deletion, profile update, clusters."""

import asyncio

import asyncpg
from aiohttp import web

from server.accounts import auth, passwords, sessions
from server.accounts.profile import ProfileUpdate, parse_profile_update
from server.errors import Conflict, Forbidden, NotFound, Unauthorized
from server.http import json_response
from server.jobs.access import check_cluster_user, owned_simulation
from server.jobs.listing import parse_listing
from server.keys import CHANGES, CONFIG, HASH_SLOTS, LOGIN_THROTTLE, POOL, SLURM, USER, USER_CACHE
from server.models import Listing
from server.parsing import query_param, read_json
from server.results.caches.changes import LEASE
from server.runner import cleanup
from server.store import refresh_tokens, simulations, slurm_jobs, users
from server.timestamps import iso_utc

STILL_RUNNING = "Simulation is still running (cannot delete)"
NO_PASSWORD = "Keycloak users have no password here: change it in Keycloak"
WRONG_PASSWORD = "Invalid current password"


def _item(row: asyncpg.Record) -> dict[str, object]:
    return {
        "job_id": row["job_id"],
        "title": row["title"],
        "start_time": iso_utc(row["start_time"]),
        "end_time": iso_utc(row["end_time"]),
        "job_state": row["job_state"],
        "sim_type": row["sim_type"],
        "input_type": row["input_type"],
        "platform": row["platform"],
        "ntasks": row["ntasks"],
    }


async def _total(request: web.Request, listing: Listing, rows: list[asyncpg.Record]) -> int:
    """How many simulations match; a second query only for a page past the last one."""
    if rows:
        total: int = rows[0]["total"]
        return total
    if listing.page_idx == 1:
        return 0
    return await simulations.count_for_user(request.app[POOL], request[USER].id, listing.states)


async def list_simulations(request: web.Request) -> web.Response:
    listing = parse_listing(request.query)
    rows = await simulations.list_page(request.app[POOL], request[USER].id, listing)
    total = await _total(request, listing, rows)
    return json_response(
        {
            "message": "User simulations",
            "simulations": [_item(row) for row in rows],
            "page_count": listing.page_count(total),
            "simulations_count": total,
        }
    )


async def delete_simulation(request: web.Request) -> web.Response:
    """Answered only once no server process serves the simulation from memory any more, also
    when it answers 404 for a simulation a concurrent request has just deleted."""
    job_id = query_param(request, "job_id")
    try:
        owner = await owned_simulation(request)
    except NotFound:
        await _after_a_deletion_under_way(request, job_id)
        raise
    pool, changes = request.app[POOL], request.app[CHANGES]
    slurm = request.app.get(SLURM)
    on_cluster = await slurm_jobs.get(pool, job_id) if slurm is not None else None
    with changes.watching(job_id) as acks:
        deleted, state = await simulations.delete_if_terminal(pool, owner.sim_pk)
        if deleted:
            await changes.deleted(pool, job_id, acks)
    if not deleted:
        if state:
            raise Conflict(STILL_RUNNING)
        # No state left: deleted by a concurrent request since the ownership check.
        await _after_a_deletion_under_way(request, job_id)
        raise NotFound("Simulation not found")
    # The job_id named a simulation of ours: a server-made name, safe as a directory name.
    await asyncio.to_thread(cleanup.remove_job_dir, request.app[CONFIG], job_id)
    if slurm is not None and on_cluster is not None:
        slurm.remove_job_dir(on_cluster)
    return json_response({"message": "Simulation deleted"})


async def _after_a_deletion_under_way(request: web.Request, job_id: str) -> None:
    """Wait out the lease when the simulation was deleted just now (by a concurrent request,
    which waits for every process's acknowledgement; this one cannot): until then a process
    may still serve it from memory (server/results/caches/changes.py)."""
    if await simulations.deleted_lately(request.app[POOL], job_id, LEASE):
        await asyncio.sleep(LEASE)


async def _password_change(
    request: web.Request, update: ProfileUpdate
) -> users.PasswordChange | None:
    """The new password's hash and the hash the current one was verified against; None if not
    changing."""
    if update.password is None:
        return None
    app, user = request.app, request[USER]
    if user.source != "local":  # nor a login to throttle: the local namesake's is not theirs
        raise Forbidden(NO_PASSWORD)
    # A guess counts as a login attempt (a stolen cookie).
    async with app[LOGIN_THROTTLE].counted(app[POOL], user.username, request.remote or ""):
        current_hash = await users.get_password_hash(app[POOL], user.id)
        given = update.current_password or ""
        verified = await passwords.verify_password(current_hash, given, app[HASH_SLOTS])
        if current_hash is None or not verified:  # None: no such user (a dummy hash was checked)
            raise Unauthorized(WRONG_PASSWORD)
    return await passwords.hash_password(update.password, app[HASH_SLOTS]), current_hash


async def update_profile(request: web.Request) -> web.Response:
    body = await read_json(request, request.app[CONFIG].server.max_body_size)
    update = parse_profile_update(body)
    password = await _password_change(request, update)
    generation = await _save_profile(request, update, password)
    response = json_response({"message": "User updated"})
    if password is not None:  # this session goes on in the new token generation
        request.app[USER_CACHE].forget(request[USER].id)
        session = sessions.current_session(request, request[USER].id)
        access, _ = auth.make_access_token(
            request.app, request[USER].id, generation, session=session
        )
        config = request.app[CONFIG]
        auth.set_cookie(response, config, auth.ACCESS_COOKIE, access, config.auth.access_ttl)
    return response


async def _save_profile(
    request: web.Request, update: ProfileUpdate, password: users.PasswordChange | None
) -> int:
    """The profile saved; the user's token generation (a new one with a new password). 401 and
    nothing saved when the user is gone, or their password changed since it was verified (by
    a concurrent change, which logged this session out)."""
    user_id = request[USER].id
    async with request.app[POOL].acquire() as conn, conn.transaction():
        generation = await users.update_profile(conn, user_id, update.changes, password)
        if generation is None:
            raise Unauthorized(WRONG_PASSWORD if password else auth.INVALID_TOKEN)
        if password is not None:
            # Whoever else holds a session (perhaps the reason for the change) is logged out:
            # their refresh tokens are revoked, and their access tokens are of an old generation.
            keep = sessions.current_session(request, user_id)
            await refresh_tokens.revoke_others(conn, user_id, keep)
    return generation


async def clusters(request: web.Request) -> web.Response:
    check_cluster_user(request)
    # Only what the seed lists: connection settings are the operator's business.
    available = [
        {"cluster_name": c.cluster_name, "display_name": c.display_name, "available": c.available}
        for c in request.app[CONFIG].clusters
    ]
    return json_response({"message": "Available clusters", "clusters": available})
