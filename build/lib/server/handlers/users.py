"""User endpoints: simulation list and deletion, profile update, clusters, inputs, logfiles."""

from aiohttp import web


async def list_simulations(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4


async def delete_simulation(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4


async def update_profile(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4


async def clusters(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4


async def get_inputs(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4


async def get_logfiles(request: web.Request) -> web.Response:
    raise NotImplementedError  # issue 4
