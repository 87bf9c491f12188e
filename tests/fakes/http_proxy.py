"""A forward HTTP proxy of the tests' own: what a server behind an institutional proxy reaches
the world through. It forwards each request it is sent (absolute-form, `GET http://host/...`)
and writes down the URLs it forwarded. Serve it with `auto_decompress=False`, or aiohttp inflates
a gzip body (the worker's results) and it is forwarded still marked gzip."""

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"host", "connection", "proxy-connection", "keep-alive", "transfer-encoding"}


class HttpProxy:
    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self.authorizations: list[str | None] = []  # each request's Proxy-Authorization

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        self.forwarded.append(str(request.url))
        self.authorizations.append(request.headers.get("Proxy-Authorization"))
        skipped = {*HOP_BY_HOP, "proxy-authorization"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skipped}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, request.url, headers=headers, data=await request.read()
            ) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            kept.pop("Content-Length", None)
            return web.Response(status=answer.status, body=body, headers=kept)
