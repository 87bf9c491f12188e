"""Typed API errors: handlers and the code under them raise these; server.http turns them into
`{"message": ...}` responses with the right status (this module imports nothing from aiohttp)."""


class ApiError(Exception):
    """An error a handler raises on purpose; its message is shown to the client."""

    status = 500

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class RequestTimeout(ApiError):
    status = 408


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class TooManyRequests(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503
