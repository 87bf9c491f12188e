"""The web UI's dialect in the OpenAPI document: under [ui] api_prefix (server/ui,
app.UI_ROUTES), the same operations as the API's path of the same name; those the dialect
reshapes (server/ui/shapes.py) answer another object."""

from server.openapi.schemas import MESSAGE, Schema, json_content

Paths = dict[str, dict[str, Schema]]

SAME = {
    "/": ["get"],
    "/auth/login": ["post"],
    "/auth/refresh": ["get"],
    "/auth/logout": ["delete"],
    "/auth/keycloak": ["post"],
    "/jobs/direct": ["post", "delete"],
    "/jobs/batch": ["post", "delete"],
    "/user/simulations": ["delete"],
    "/logfiles": ["get"],
}
RESHAPED = {
    "/jobs/direct": ["get"],
    "/jobs": ["get"],
    "/jobs/batch": ["get"],
    "/user/simulations": ["get"],
    "/inputs": ["get"],
    "/estimators": ["get"],
    "/results": ["get"],
}


def _operation(api_spec: Schema, reshaped: bool) -> Schema:
    """The API's operation as the dialect offers it."""
    spec = dict(api_spec, summary=f"The web UI's {api_spec['summary']}")
    if reshaped:
        status = next(code for code in spec["responses"] if code.startswith("2"))
        answer = {"description": "Success, in the UI's shape", "content": json_content(MESSAGE)}
        spec["responses"] = {**spec["responses"], status: answer}
    return spec


def dialect_paths(api: Paths, prefix: str) -> Paths:
    """The dialect's paths under `prefix`, made from the API's `api` paths."""
    paths: Paths = {}
    for table, reshaped in ((SAME, False), (RESHAPED, True)):
        for path, methods in table.items():
            for method in methods:
                operation = _operation(api[path][method], reshaped)
                paths.setdefault(prefix.rstrip("/") + path, {})[method] = operation
    return paths
