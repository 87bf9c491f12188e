"""Every typed application and request key, in one place."""

import asyncpg
from aiohttp import web

from server.config import Config
from server.models import User
from server.runner import Dispatcher

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET = web.AppKey("secret", str)

USER = web.RequestKey("user", User)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
