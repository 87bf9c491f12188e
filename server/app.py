"""create_app(config): the whole API wired together. No I/O happens here."""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from server.auth import auth_middleware, secret_ctx
from server.bodies import body_middleware
from server.budget import BodyBudget
from server.config import Config
from server.db import pool_ctx
from server.errors import error_middleware
from server.handlers import auth, jobs, results, users, workers
from server.keys import (
    BODY_BUDGET,
    BODY_CACHE,
    CONFIG,
    DISPATCHER,
    HASH_SLOTS,
    LOGIN_THROTTLE,
    PAGE_CACHE,
    POOL,
    USER_CACHE,
)
from server.lru import LruCache
from server.pagecache import PageCache
from server.runner import NoDispatcher
from server.runner.local import LocalDispatcher
from server.throttle import LoginThrottle
from server.usercache import UserCache


def add_routes(app: web.Application) -> None:
    """The API, top to bottom (contract: shared/spec/api.md)."""
    app.router.add_routes(
        [
            web.get("/", auth.index),
            # accounts
            web.put("/auth/register", auth.register),
            web.post("/auth/login", auth.login),
            web.get("/auth/refresh", auth.refresh),
            web.get("/auth/status", auth.status),
            web.delete("/auth/logout", auth.logout),
            # submission and status (access cookie)
            web.post("/jobs/direct", jobs.submit),
            web.get("/jobs/direct", jobs.status),
            web.get("/jobs", jobs.status),
            web.delete("/jobs/direct", jobs.cancel),
            # workers (update key)
            web.post("/tasks", workers.update_task),
            web.post("/jobs", workers.update_job),
            web.post("/results", results.upload),
            web.post("/logfiles", workers.upload_logfiles),
            # results and inputs (access cookie)
            web.get("/results", results.get_results),
            web.get("/estimators", results.get_estimators),
            web.get("/inputs", users.get_inputs),
            web.get("/logfiles", users.get_logfiles),
            # the user's own simulations and profile
            web.get("/user/simulations", users.list_simulations),
            web.delete("/user/simulations", users.delete_simulation),
            web.post("/user/update", users.update_profile),
            web.get("/clusters", users.clusters),
        ]
    )


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The configured dispatcher, started after the pool and stopped before it."""
    config = app[CONFIG]
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
    app.cleanup_ctx.extend([secret_ctx, pool_ctx, dispatcher_ctx])
    add_routes(app)
    return app
