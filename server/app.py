"""create_app(config): the whole API wired together. No I/O happens here."""

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server.auth import auth_middleware, secret_ctx
from server.config import Config
from server.config_checks import origin_list
from server.db import pool_ctx
from server.errors import error_middleware
from server.handlers import auth, jobs, results, ui, users, workers
from server.keys import BODY_CACHE, CONFIG, DISPATCHER, PAGE_CACHE, POOL, USER_CACHE
from server.lru import LruCache
from server.pagecache import PageCache
from server.runner import NoDispatcher
from server.runner.local import LocalDispatcher
from server.ui import shapes
from server.ui.cors import enable_cors
from server.ui.dialect import create_dialect, reshaped
from server.ui.static import Bundle, bundle_middleware, html_or
from server.usercache import UserCache


def add_routes(app: web.Application, bundle: Bundle | None) -> None:
    """The API, top to bottom (contract: shared/spec/api.md)."""
    app.router.add_routes(
        [
            web.get("/", html_or(auth.index, bundle)),
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


def ui_routes() -> list[web.RouteDef]:
    """The web UI's dialect, under `[ui] api_prefix` (shared/spec/ui-client.md): the same
    handlers, in the UI's shapes (server/ui/shapes.py)."""
    return [
        web.get("/", auth.index),
        web.post("/auth/login", auth.login),
        web.get("/auth/refresh", ui.refresh),
        web.delete("/auth/logout", auth.logout),
        web.post("/jobs/direct", jobs.submit),
        web.get("/jobs/direct", reshaped(jobs.status, shapes.job_status)),
        web.get("/jobs", reshaped(jobs.status, shapes.job_status)),
        web.delete("/jobs/direct", jobs.cancel),
        web.get("/user/simulations", reshaped(users.list_simulations, shapes.simulations)),
        web.delete("/user/simulations", users.delete_simulation),
        web.get("/inputs", ui.inputs),
        web.get("/estimators", ui.estimators),
        web.get("/results", ui.results_of),
        web.get("/logfiles", users.get_logfiles),
    ]


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
    # Bodies are size-checked per endpoint by server.http.read_body (user vs worker limits).
    client_max_size = max(config.server.max_body_size, config.server.worker_max_body_size)
    ui_config = config.ui
    bundle = (
        Bundle(Path(ui_config.static_dir), ui_config.api_prefix) if ui_config.static_dir else None
    )
    middlewares = [error_middleware, auth_middleware]
    if bundle is not None:
        middlewares.insert(1, bundle_middleware(bundle))
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app[CONFIG] = config
    app[PAGE_CACHE] = PageCache(config.server.page_cache_size)
    app[BODY_CACHE] = LruCache[bytes](config.server.body_cache_size)
    app[USER_CACHE] = UserCache(config.auth.user_cache_ttl)
    app.cleanup_ctx.extend([secret_ctx, pool_ctx, dispatcher_ctx])
    add_routes(app, bundle)
    origins = origin_list(config.ui.allowed_origins)
    enable_cors(app, origins)
    dialect = create_dialect(app, ui_routes())
    enable_cors(dialect, origins)
    app.add_subapp(config.ui.api_prefix, dialect)
    return app
