"""Every typed application and request key, in one place."""

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from server.config import Config
from server.lru import LruCache
from server.models import User
from server.pagecache import PageCache
from server.runner import Dispatcher
from server.usercache import UserCache

if TYPE_CHECKING:  # the dispatcher imports the job state module, which needs these keys
    from server.runner.slurm import SlurmDispatcher

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET = web.AppKey("secret", str)
PAGE_CACHE = web.AppKey("page_cache", PageCache)
BODY_CACHE = web.AppKey("body_cache", LruCache[bytes])

USER = web.RequestKey("user", User)
USER_CACHE = web.AppKey("user_cache", UserCache)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
# Set only when SLURM is used (runner.kind = "slurm" or [[clusters]] configured).
SLURM: web.AppKey["SlurmDispatcher"] = web.AppKey("slurm")
