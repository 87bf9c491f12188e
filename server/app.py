"""create_app(config): the whole API wired together. No I/O happens here."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.accounts.auth import for_users, secret_ctx
from server.accounts.usercache import UserCache
from server.background import stopped
from server.config import Config
from server.config_checks import origin_list
from server.database.db import pool_ctx
from server.handlers import auth, files, jobs, keycloak, meta, results, ui, users, workers
from server.http import error_middleware, expect_continue
from server.jobs.conversion import converters_ctx
from server.jobs.turns import JobTurns
from server.keys import (
    BODY_BUDGET,
    BODY_CACHE,
    BODY_FILES,
    CHANGES,
    CONFIG,
    DISPATCHER,
    HASH_SLOTS,
    JOB_TURNS,
    KEYCLOAK,
    LOGIN_THROTTLE,
    PAGE_CACHE,
    POOL,
    PROJECT_OUTPUTS,
    RESULTS_INDEX,
    SLURM,
    USER_CACHE,
)
from server.limits.bodies import with_body_budget
from server.limits.budget import BodyBudget
from server.limits.serving import one_write_per_response
from server.limits.throttle import LoginThrottle
from server.results.caches import bodyfiles
from server.results.caches.bodyfiles import BodyFiles
from server.results.caches.changes import Changes
from server.results.caches.indexcache import IndexCache
from server.results.caches.lru import LruCache
from server.results.caches.pagecache import PageCache
from server.results.fetch.inflating import inflater_ctx
from server.runner import NoDispatcher, cleanup
from server.runner.cleanup import sweep_ctx
from server.runner.local.dispatcher import LocalDispatcher
from server.runner.slurm.dispatcher import SlurmDispatcher
from server.runner.slurm.reconcile import Reconciler
from server.sso.jwks import ProviderKeys
from server.sso.keycloak import TokenVerifier
from server.ui import shapes
from server.ui.cors import enable_cors
from server.ui.dialect import create_dialect, reshaped
from server.ui.static import Bundle, bundle_ctx, bundle_middleware, html_or

# Who may call a route: anyone, a user with an access cookie (checked by add_routes' wrapper),
# or a worker with an update key (checked in its handler, which must read the body for it).
Access = Literal["public", "user", "worker"]

ROUTES: list[tuple[str, str, Handler, Access]] = [
    # The API, top to bottom (contract: shared/spec/api.md).
    ("GET", "/", meta.index, "public"),
    ("GET", "/openapi.json", meta.openapi_document, "public"),
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
    ("GET", "/jobs/batch", jobs.batch_status, "user"),
    ("DELETE", "/jobs/batch", jobs.cancel_batch, "user"),
    # workers
    ("POST", "/tasks", workers.update_task, "worker"),
    ("POST", "/jobs", workers.update_job, "worker"),
    ("POST", "/results", results.upload, "worker"),
    ("POST", "/logfiles", workers.upload_logfiles, "worker"),
    # results and inputs
    ("GET", "/results", results.get_results, "user"),
    ("GET", "/estimators", results.get_estimators, "user"),
    ("GET", "/inputs", files.get_inputs, "user"),
    ("GET", "/logfiles", files.get_logfiles, "user"),
    # the user's own simulations and profile
    ("GET", "/user/simulations", users.list_simulations, "user"),
    ("DELETE", "/user/simulations", users.delete_simulation, "user"),
    ("POST", "/user/update", users.update_profile, "user"),
    ("GET", "/clusters", users.clusters, "user"),
]

UI_ROUTES: list[tuple[str, str, Handler, Access]] = [
    # The web UI's dialect, under [ui] api_prefix (shared/spec/ui-client.md): the same
    # handlers, in the UI's shapes (server/ui/shapes.py).
    ("GET", "/", meta.index, "public"),
    ("POST", "/auth/login", auth.login, "public"),
    ("GET", "/auth/refresh", ui.refresh, "public"),
    ("DELETE", "/auth/logout", auth.logout, "public"),
    ("POST", "/auth/keycloak", keycloak.sign_in, "public"),  # the Keycloak token is checked inside
    ("POST", "/jobs/direct", jobs.submit, "user"),
    ("GET", "/jobs/direct", reshaped(jobs.status, shapes.job_status), "user"),
    ("GET", "/jobs", reshaped(jobs.status, shapes.job_status), "user"),
    ("DELETE", "/jobs/direct", jobs.cancel, "user"),
    ("POST", "/jobs/batch", jobs.submit_batch, "user"),
    ("GET", "/jobs/batch", reshaped(jobs.batch_status, shapes.job_status), "user"),
    ("DELETE", "/jobs/batch", jobs.cancel_batch, "user"),
    ("GET", "/user/simulations", reshaped(users.list_simulations, shapes.simulations), "user"),
    ("DELETE", "/user/simulations", users.delete_simulation, "user"),
    ("GET", "/inputs", ui.inputs, "user"),
    ("GET", "/estimators", ui.estimators, "user"),
    ("GET", "/results", ui.results_of, "user"),
    ("GET", "/logfiles", files.get_logfiles, "user"),
]


def add_routes(app: web.Application, routes: list[tuple[str, str, Handler, Access]]) -> None:
    """Every route of `routes`, the ones for users behind the access cookie (worker routes check
    the update key in their handlers), all but GETs with a body budget (server/limits), and an
    `Expect` header answered in JSON (server.http.expect_continue). A GET answers HEAD too: the
    same status and headers, no body (aiohttp drops a web.Response's; the handlers that stream
    check request.method)."""
    for method, path, handler, access in routes:
        wrapped = for_users(handler) if access == "user" else handler
        if method == "GET":
            app.router.add_get(path, wrapped, expect_handler=expect_continue)
        else:
            app.router.add_route(
                method, path, with_body_budget(wrapped), expect_handler=expect_continue
            )


def with_ui(app: web.Application, config: Config) -> None:
    """The UI's dialect mounted, with CORS on both applications."""
    origins = origin_list(config.ui.allowed_origins)
    dialect = create_dialect(app)
    add_routes(dialect, UI_ROUTES)
    enable_cors(app, origins)
    enable_cors(dialect, origins)
    app.add_subapp(config.ui.api_prefix, dialect)


async def slurm_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SLURM dispatcher and its reconciler, when SLURM is used (kind "slurm", clusters)."""
    config = app[CONFIG]
    if config.runner.kind != "slurm" and not config.clusters:
        yield
        return
    slurm = SlurmDispatcher(config, app[POOL])
    direct = config.runner.kind == "slurm"
    url, interval, quota = config.database.url, config.slurm.poll_interval, config.jobs.user_quota
    reconciler = Reconciler(slurm, app[POOL], url, interval, direct, quota)
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
    app[CHANGES].watchers.append(runner.changed)  # cancels and deletes by another server
    app[CHANGES].resumed.append(runner.recheck)  # and those made while nobody listened
    try:
        yield
    finally:
        await runner.close()


async def body_files_ctx(app: web.Application) -> AsyncIterator[None]:
    """The body files (server/results/caches/bodyfiles.py), after the pool they are written from."""
    files = app[BODY_FILES]
    await asyncio.to_thread(files.start)
    try:
        yield
    finally:
        await files.close()


async def changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """The change listener of this process (server/results/caches/changes.py), after the pool."""

    def reset() -> None:
        app[PAGE_CACHE].clear()
        app[BODY_CACHE].clear()
        app[PROJECT_OUTPUTS].clear()

    files, remove_job_dir = app[BODY_FILES], cleanup.on_deletion(app[CONFIG])

    def forget(job_id: str) -> None:
        files.forget(job_id)
        remove_job_dir(job_id)

    changes = Changes(app[CONFIG].database.url, app[RESULTS_INDEX], forget, reset, files.job_ids)
    app[CHANGES] = changes
    listening = asyncio.create_task(changes.run())
    try:
        yield
    finally:
        await stopped(listening)


async def keycloak_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Keycloak token verifier, with one HTTP session for the realm (if configured), through
    the proxy the environment names, if any (HTTPS_PROXY, HTTP_PROXY, NO_PROXY: server.proxies)."""
    settings = app[CONFIG].keycloak
    if not settings.issuer:
        yield
        return
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        app[KEYCLOAK] = TokenVerifier(settings, ProviderKeys(http, settings))
        yield


def create_app(config: Config) -> web.Application:
    # Bodies are size-checked per endpoint by server.limits.bodies.read_body (user vs worker limits).
    client_max_size = max(config.server.max_body_size, config.server.worker_max_body_size)
    static_dir, prefix = config.ui.static_dir, config.ui.api_prefix
    bundle = Bundle(Path(static_dir), prefix) if static_dir else None
    middlewares: list[Middleware] = [error_middleware]
    if bundle is not None:
        middlewares.append(bundle_middleware(bundle))
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app.on_startup.append(one_write_per_response)
    app[CONFIG] = config
    # The budget holds at least one body of the largest size, or that body could never be read.
    budget = max(config.server.body_budget, client_max_size)
    app[BODY_BUDGET] = BodyBudget(budget, config.server.body_wait, client_max_size)
    limits = config.auth
    app[LOGIN_THROTTLE] = LoginThrottle(
        limits.login_attempts, limits.login_address_attempts, limits.login_window
    )
    app[HASH_SLOTS] = asyncio.Semaphore(limits.hash_concurrency)
    app[JOB_TURNS] = JobTurns()
    app[PAGE_CACHE] = PageCache(config.server.page_cache_size)
    app[BODY_CACHE] = LruCache[bytes](config.server.body_cache_size)
    app[BODY_FILES] = BodyFiles(
        config.data_dir / bodyfiles.DIRECTORY, config.server.disk_cache_size
    )
    app[RESULTS_INDEX] = IndexCache(config.server.index_cache_size, config.server.index_cache_pages)
    app[PROJECT_OUTPUTS] = LruCache[shapes.Outputs](shapes.OUTPUTS_CACHE_SIZE)
    app[USER_CACHE] = UserCache(config.auth.user_cache_ttl)
    app.cleanup_ctx.append(bundle_ctx)  # first: a missing UI stops the start at once
    app.cleanup_ctx.extend(
        [
            secret_ctx,
            pool_ctx,
            inflater_ctx,
            converters_ctx,
            body_files_ctx,
            changes_ctx,
            slurm_ctx,
            dispatcher_ctx,
            keycloak_ctx,
            sweep_ctx,
        ]
    )
    routes = [(m, p, html_or(h, bundle) if p == "/" else h, a) for m, p, h, a in ROUTES]
    add_routes(app, routes)
    with_ui(app, config)
    return app
