"""`GET /` (liveness and version) and `GET /openapi.json` (the API's OpenAPI document)."""

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from server import openapi
from server.http import json_response
from server.keys import CONFIG

try:
    VERSION = version("yaptide-server")
except PackageNotFoundError:  # running from a checkout that was not pip-installed
    VERSION = "0.1.0"


async def index(request: web.Request) -> web.Response:
    return json_response({"message": "Hello World!", "version": VERSION})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(openapi.document(VERSION, request.app[CONFIG].ui.api_prefix))
