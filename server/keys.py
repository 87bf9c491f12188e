"""Every typed application key, and the request key of the user, in one place. (The body
budget's own request keys are in server/limits/budget.py: this module imports that one.)"""

import asyncio
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from server.accounts.usercache import UserCache
from server.config import Config
from server.jobs.turns import JobTurns
from server.limits.budget import BodyBudget
from server.limits.throttle import LoginThrottle
from server.models import User
from server.results.caches.bodyfiles import BodyFiles
from server.results.caches.changes import Changes
from server.results.caches.indexcache import IndexCache
from server.results.caches.lru import LruCache
from server.results.caches.pagecache import PageCache
from server.runner import Dispatcher
from server.sso.keycloak import TokenVerifier

if TYPE_CHECKING:  # the dispatcher imports the job state module, which needs these keys
    from server.jobs.conversion import Converters  # and submissions read requests (server.parsing)
    from server.runner.slurm.dispatcher import SlurmDispatcher

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET = web.AppKey("secret", str)
PAGE_CACHE = web.AppKey("page_cache", PageCache)
BODY_CACHE = web.AppKey("body_cache", LruCache[bytes])
BODY_FILES = web.AppKey("body_files", BodyFiles)
INFLATER = web.AppKey("inflater", Executor)  # server/results/fetch/inflating.py
RESULTS_INDEX = web.AppKey("results_index", IndexCache)
# The UI dialect's (name, file name) of each output of an editor project, by sim_pk (inputs never
# change; server/handlers/ui.py).
PROJECT_OUTPUTS = web.AppKey("project_outputs", LruCache[list[tuple[str, str]]])
CHANGES = web.AppKey("changes", Changes)
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
HASH_SLOTS = web.AppKey("hash_slots", asyncio.Semaphore)
JOB_TURNS = web.AppKey("job_turns", JobTurns)  # server/jobs/turns.py

USER = web.RequestKey("user", User)
# A client waiting for `100 Continue` before it sends its body (server.http.expect_continue).
CONTINUE_OWED = web.RequestKey("continue_owed", bool)
USER_CACHE = web.AppKey("user_cache", UserCache)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
KEYCLOAK = web.AppKey("keycloak", TokenVerifier)  # present only when [keycloak] is configured
# Set only when SLURM is used (runner.kind = "slurm" or [[clusters]] configured).
SLURM: web.AppKey["SlurmDispatcher"] = web.AppKey("slurm")
CONVERTERS: web.AppKey["Converters"] = web.AppKey("converters")  # server/jobs/conversion.py
