"""create_app(config): the whole API wired together. No I/O happens here."""

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from server.auth import auth_middleware, secret_ctx
from server.bodies import body_middleware
from server.budget import BodyBudget
from server.config import Config
from server.db import pool_ctx
from server.handlers import auth, jobs, keycloak, results, users, workers
from server.http import error_middleware
from server.jwks import ProviderKeys
from server.keycloak import TokenVerifier
from server.keys import (
    BODY_BUDGET,
    BODY_CACHE,
    CONFIG,
    COOKIE_FREE,
    DISPATCHER,
    HASH_SLOTS,
    KEYCLOAK,
    LOGIN_THROTTLE,
    PAGE_CACHE,
    POOL,
    SLURM,
    USER_CACHE,
)
from server.results.lru import LruCache
from server.results.pagecache import PageCache
from server.runner import NoDispatcher
from server.runner.cleanup import job_dirs_ctx
from server.runner.local import LocalDispatcher
from server.runner.slurm.dispatcher import SlurmDispatcher
from server.runner.slurm.reconcile import Reconciler
from server.throttle import LoginThrottle
from server.usercache import UserCache

# Who may call a route: anyone, a user with an access cookie, or a worker with an update key.
Access = Literal["public", "user", "worker"]

ROUTES: list[tuple[str, str, Handler, Access]] = [
    # The API, top to bottom (contract: shared/spec/api.md).
    ("GET", "/", auth.index, "public"),
    ("GET", "/openapi.json", auth.openapi_document, "public"),
    # accounts
    ("PUT", "/auth/register", auth.register, "public"),
    ("POST", "/auth/login", auth.login, "public"),
    ("GET", "/auth/refresh", auth.refresh, "public"),  # the refresh cookie is checked inside
    ("GET", "/auth/status", auth.status, "user"),
    ("DELETE", "/auth/logout", auth.logout, "public"),
    ("POST", "/auth/keycloak", keycloak.sign_in, "public"),  # the Keycloak token is checked inside
    ("DELETE", "/auth/keycloak", keycloak.sign_out, "public"),
    # submission and status
    ("POST", "/jobs/direct", jobs.submit, "user"),
    ("GET", "/jobs/direct", jobs.status, "user"),
    ("GET", "/jobs", jobs.status, "user"),
    ("DELETE", "/jobs/direct", jobs.cancel, "user"),
    ("POST", "/jobs/batch", jobs.submit_batch, "user"),
    ("GET", "/jobs/batch", jobs.status, "user"),
    ("DELETE", "/jobs/batch", jobs.cancel, "user"),
    # workers
    ("POST", "/tasks", workers.update_task, "worker"),
    ("POST", "/jobs", workers.update_job, "worker"),
    ("POST", "/results", results.upload, "worker"),
    ("POST", "/logfiles", workers.upload_logfiles, "worker"),
    # results and inputs
    ("GET", "/results", results.get_results, "user"),
    ("GET", "/estimators", results.get_estimators, "user"),
    ("GET", "/inputs", users.get_inputs, "user"),
    ("GET", "/logfiles", users.get_logfiles, "user"),
    # the user's own simulations and profile
    ("GET", "/user/simulations", users.list_simulations, "user"),
    ("DELETE", "/user/simulations", users.delete_simulation, "user"),
    ("POST", "/user/update", users.update_profile, "user"),
    ("GET", "/clusters", users.clusters, "user"),
]


def add_routes(app: web.Application) -> None:
    """Every route of ROUTES; those not needing an access cookie are listed in COOKIE_FREE."""
    cookie_free = set()
    for method, path, handler, access in ROUTES:
        route = app.router.add_route(method, path, handler)
        if access != "user":
            cookie_free.add(route)
    app[COOKIE_FREE] = frozenset(cookie_free)


async def slurm_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SLURM dispatcher and its reconciler, when SLURM is used (kind "slurm", clusters)."""
    config = app[CONFIG]
    if config.runner.kind != "slurm" and not config.clusters:
        yield
        return
    slurm = SlurmDispatcher(config, app[POOL])
    direct = config.runner.kind == "slurm"
    reconciler = Reconciler(slurm, app[POOL], config.slurm.poll_interval, direct)
    app[SLURM] = slurm
    reconciler.start()
    try:
        yield
    finally:
        await reconciler.stop()
        await slurm.close()


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The configured dispatcher, started after the pool and stopped before it."""
    config = app[CONFIG]
    if config.runner.kind == "slurm":
        app[DISPATCHER] = app[SLURM]
        yield
        return
    if config.runner.kind != "local":
        app[DISPATCHER] = NoDispatcher()
        yield
        return
    runner = LocalDispatcher(config, app[POOL])
    await runner.start()
    app[DISPATCHER] = runner
    try:
        yield
    finally:
        await runner.close()


async def keycloak_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Keycloak token verifier, with one HTTP session for the realm (if configured)."""
    settings = app[CONFIG].keycloak
    if not settings.issuer:
        yield
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.timeout)) as http:
        app[KEYCLOAK] = TokenVerifier(settings, ProviderKeys(http, settings))
        yield


def create_app(config: Config) -> web.Application:
    # Bodies are size-checked per endpoint by server.bodies.read_body (user vs worker limits).
    client_max_size = max(config.server.max_body_size, config.server.worker_max_body_size)
    app = web.Application(
        middlewares=[error_middleware, body_middleware, auth_middleware],
        client_max_size=client_max_size,
    )
    app[CONFIG] = config
    # The budget holds at least one body of the largest size, or that body could never be read.
    budget = max(config.server.body_budget, client_max_size)
    app[BODY_BUDGET] = BodyBudget(budget, config.server.body_wait)
    limits = config.auth
    app[LOGIN_THROTTLE] = LoginThrottle(
        limits.login_attempts, limits.login_address_attempts, limits.login_window
    )
    app[HASH_SLOTS] = asyncio.Semaphore(limits.hash_concurrency)
    app[PAGE_CACHE] = PageCache(config.server.page_cache_size)
    app[BODY_CACHE] = LruCache[bytes](config.server.body_cache_size)
    app[USER_CACHE] = UserCache(config.auth.user_cache_ttl)
    app.cleanup_ctx.extend(
        [secret_ctx, pool_ctx, slurm_ctx, dispatcher_ctx, keycloak_ctx, job_dirs_ctx]
    )
    add_routes(app)
    return app
