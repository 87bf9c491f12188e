"""The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`: the API's paths
(paths), the UI dialect's (dialect), built from shared blocks (schemas).

A test checks both ways that the document's operations and the app's routes match, and the test
suite fuzzes the live server against it with schemathesis (tests/test_openapi.py): every answer
must be documented and match its schema.
"""

from server.openapi.dialect import dialect_paths
from server.openapi.paths import api_paths
from server.openapi.schemas import Schema


def document(version: str, ui_prefix: str = "/ui") -> Schema:
    """The whole document; `version` is the server's, `ui_prefix` the dialect's mount point."""
    api = api_paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "YAPTIDE server",
            "version": version,
            "description": 'Contract: shared/spec/api.md. Errors are {"message": ...}.',
        },
        "paths": {**api, **dialect_paths(api, ui_prefix)},
        "components": {
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "access_token"},
                "refreshCookie": {"type": "apiKey", "in": "cookie", "name": "refresh_token"},
                "keycloak": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "updateKey": {"type": "http", "scheme": "bearer", "description": "a job's key"},
            }
        },
    }
