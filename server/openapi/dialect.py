"""The web UI's dialect in the OpenAPI document: under [ui] api_prefix (server/ui,
app.UI_ROUTES), the same operations as the API's path of the same name; those the dialect
reshapes (server/ui/shapes.py) answer the UI's shape, described here."""

import copy

from server.openapi.schemas import INTEGER, STRING, TIME, Schema, json_content, obj

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
HOURS = {
    **obj(["hours", "minutes", "seconds"], hours=INTEGER, minutes=INTEGER, seconds=INTEGER),
    "type": ["object", "null"],
}
LIST_ITEM = obj(
    ["job_id", "title", "start_time", "end_time", "metadata"],
    job_id=STRING,
    title=STRING,
    start_time=TIME,
    end_time=TIME,
    metadata=obj(
        ["platform", "server", "input_type", "sim_type"],
        platform=STRING,
        server=STRING,
        input_type={"type": "string", "enum": ["EDITOR", "FILES"]},
        sim_type=STRING,
    ),
)
INPUTS = obj(
    ["message", "input"],
    message=STRING,
    input=obj(
        ["input_type", "input_files", "number_of_all_primaries"],
        input_type={"type": "string", "enum": ["EDITOR", "FILES"]},
        input_json={"type": "object"},
        input_files={"type": "object", "additionalProperties": STRING},
        number_of_all_primaries=INTEGER,
    ),
)
PAGE_META = obj(
    ["page_number", "page_name", "page_dimension"],
    page_number=INTEGER,
    page_name=STRING,
    page_dimension={"type": "integer", "minimum": 0, "maximum": 3},
)
ESTIMATORS = obj(
    ["message", "estimators_metadata"],
    message=STRING,
    estimators_metadata={
        "type": "array",
        "items": obj(
            ["name", "pages_metadata"],
            name=STRING,
            pages_metadata={"type": "array", "items": PAGE_META},
        ),
    },
)
PAGES = obj(["message", "pages"], message=STRING, pages={"type": "array"})
PAGE = obj(["message", "page"], message=STRING, page={"type": ["object", "null"]})


def _success(api_spec: Schema) -> tuple[str, Schema]:
    """The status and the body schema of an API operation's success."""
    status = next(code for code in api_spec["responses"] if code.startswith("2"))
    return status, api_spec["responses"][status]["content"]["application/json"]["schema"]


def _ui_bodies(api: Paths) -> dict[str, Schema]:
    """The UI's body of each reshaped path, from the API's where only a part differs."""
    status = copy.deepcopy(_success(api["/jobs/direct"]["get"])[1])
    status["properties"]["job_tasks_status"]["items"]["properties"]["estimated_time"] = HOURS
    simulations = copy.deepcopy(_success(api["/user/simulations"]["get"])[1])
    simulations["properties"]["simulations"]["items"] = LIST_ITEM
    results = {"anyOf": [_success(api["/results"]["get"])[1], PAGES, PAGE]}
    return {
        "/jobs/direct": status,
        "/jobs": status,
        "/jobs/batch": status,
        "/user/simulations": simulations,
        "/inputs": INPUTS,
        "/estimators": ESTIMATORS,
        "/results": results,
    }


def _operation(api_spec: Schema, body: Schema | None) -> Schema:
    """The API's operation as the dialect offers it (its success body `body` if reshaped)."""
    spec = dict(api_spec, summary=f"The web UI's {api_spec['summary']}")
    if body is not None:
        status, _ = _success(spec)
        answer = {"description": "Success, in the UI's shape", "content": json_content(body)}
        spec["responses"] = {**spec["responses"], status: answer}
    return spec


def dialect_paths(api: Paths, prefix: str) -> Paths:
    """The dialect's paths under `prefix`, made from the API's `api` paths."""
    paths: Paths = {}
    bodies = _ui_bodies(api)
    for table, reshaped in ((SAME, False), (RESHAPED, True)):
        for path, methods in table.items():
            for method in methods:
                operation = _operation(api[path][method], bodies[path] if reshaped else None)
                paths.setdefault(prefix.rstrip("/") + path, {})[method] = operation
    return paths
