"""Request parsing and JSON responses shared by every handler."""

from typing import Any

import orjson
from aiohttp import web

from server import values
from server.bodies import read_body
from server.errors import BadRequest


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is not one."""
    # Parsed from the buffer as read, without a copy: bodies may be hundreds of MiB.
    body = await read_body(request, limit)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequest("JSON body must be an object")
    return data


def field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    """body[name] checked against `kind`; 400 naming the field when missing or mistyped."""
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"Missing field: {name}")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BadRequest(f"Field {name} must be of type {_JSON_NAMES.get(names, names)}")
    return values.text(value, name) if isinstance(value, str) else value


_JSON_NAMES = {
    "str": "string",
    "int": "integer",
    "dict": "object",
    "list": "array",
    "bool": "boolean",
}


def query_param(request: web.Request, name: str) -> str:
    """A required query parameter; 400 `Missing <name>` when absent or empty."""
    value = request.query.get(name)
    if not value:
        raise BadRequest(f"Missing {name}")
    return values.text(value, name)


def optional_query_param(request: web.Request, name: str) -> str | None:
    """An optional query parameter (absent or empty: None), checked like query_param."""
    value = request.query.get(name)
    return values.text(value, name) if value else None
