"""How the HTTP server itself is set up: the settings aiohttp applies below the application.

The same settings serve `python run.py` (one process or several) and the tests' servers, so
what the tests check is what runs.
"""

from typing import Any

from server.config import Config


def handler_settings(config: Config) -> dict[str, Any]:
    """Keyword arguments for aiohttp's connection handler (web.run_app, AppRunner, TestServer)."""
    return {
        # An idle connection, or one whose request line and headers are not complete, is closed
        # this long after it opened or after its last response.
        "keepalive_timeout": config.server.keepalive_timeout,
        # Encoded request bodies are inflated by server.limits.bodies, with bounds and JSON errors.
        "auto_decompress": False,
    }
