"""Results: upload by workers (`POST /results`) and the read side (`GET /results`, `/estimators`)."""

from aiohttp import web

from server import auth


@auth.public
async def upload(request: web.Request) -> web.Response:
    raise NotImplementedError


async def get_results(request: web.Request) -> web.StreamResponse:
    raise NotImplementedError


async def get_estimators(request: web.Request) -> web.Response:
    raise NotImplementedError
