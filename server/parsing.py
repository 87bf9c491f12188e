"""Reading a request: its JSON body (its type, size and parse cost checked first), a body's
fields, query parameters and a bearer token. Each failure is the ApiError the client sees."""

from typing import Any

import orjson
from aiohttp import web

from server import values
from server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from server.keys import CONFIG
from server.limits.bodies import hold_for_parsing, read_body
from server.limits.budget import FREE_BYTES

# What a page of any origin may POST without a CORS preflight (and with the user's cookies):
# no Content-Type, or one of the CORS-safelisted ones. Our clients send application/json. (PUT
# and DELETE are never sent cross-origin without a preflight, which only allowed origins pass.)
_CROSS_SITE_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)


def check_json_type(request: web.Request) -> None:
    """415 for a POST body another site's page could have sent (cross-site request forgery)."""
    media = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if request.method == "POST" and media in _CROSS_SITE_TYPES:
        raise UnsupportedMediaType("Content-Type must be application/json")


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; 415 for a type a form could send (check_json_type),
    413 when it is too large (also once parsed: hold_for_parsing), 400 when it is not a JSON
    object."""
    check_json_type(request)
    body = await read_body(request, limit)
    await hold_for_parsing(request, body)
    check_parse_time(body)
    return parse_json(body)


# orjson holds the event loop for the whole parse: about 0.5 µs for each object, array and key
# here, 0.1 µs for each other value. A user's body is held to about a second of it (counted
# with the marks inside strings too: legit bodies have far fewer). Workers' bodies (log files
# are text of any kind) are not read here.
MAX_CONTAINERS_AND_KEYS = 1_000_000
MAX_VALUES = 5_000_000


def check_parse_time(body: bytes | bytearray) -> None:
    """413 for a body whose parse would stall every other request of this process."""
    if len(body) <= MAX_CONTAINERS_AND_KEYS:  # each one takes a byte at least
        return
    nested = body.count(b"{") + body.count(b"[") + body.count(b":")
    if nested > MAX_CONTAINERS_AND_KEYS or body.count(b",") > MAX_VALUES:
        raise PayloadTooLarge(
            f"Request body too large: more than {MAX_CONTAINERS_AND_KEYS} objects, arrays and "
            f"keys, or {MAX_VALUES} values"
        )


async def read_public_json(request: web.Request) -> dict[str, Any]:
    """The body of a public route (credentials, a username) as a JSON object, at most FREE_BYTES
    (413 past it): anyone may send one, and the parser takes up to ~25 times a body's size in
    Python objects, so a larger limit would let a few KiB of gzip cost gigabytes."""
    return await read_json(request, min(request.app[CONFIG].server.max_body_size, FREE_BYTES))


def parse_json(body: bytes | bytearray) -> dict[str, Any]:
    """A body as a JSON object; 400 when it is not one."""
    # Parsed from the buffer as read, without a copy: bodies may be hundreds of MiB.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequest("JSON body must be an object")
    return data


def field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
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


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one. Header bytes
    that are not UTF-8 (kept by aiohttp as lone surrogates, which cannot be encoded or hashed)
    become "?": such a token is simply wrong."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip().encode("utf-8", "replace").decode()
    return (token or None) if scheme.lower() == "bearer" else None


def query_param(request: web.Request, name: str) -> str:
    """A required query parameter; 400 `Missing <name>` when absent or empty."""
    value = values.one(request.query, name)
    if not value:
        raise BadRequest(f"Missing {name}")
    return values.text(value, name)


def optional_query_param(request: web.Request, name: str) -> str | None:
    """An optional query parameter (absent or empty: None), checked like query_param."""
    value = values.one(request.query, name)
    return values.text(value, name) if value else None
