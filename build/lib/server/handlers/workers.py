"""Worker-facing endpoints (update key auth): `POST /tasks`, `POST /jobs`, `POST /logfiles`."""

from aiohttp import web

from server import auth


@auth.public
async def update_task(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 3


@auth.public
async def update_job(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 3


@auth.public
async def upload_logfiles(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 3
