"""The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`.

One entry per route of server.app.ROUTES (a test checks both ways that they match), written from
shared/spec/api.md and the seeds. The test suite fuzzes the live server against it with
schemathesis (tests/test_openapi.py): every answer must be documented and match its schema.
"""

from typing import Any

from server.jobs.states import JOB_STATES

Schema = dict[str, Any]

STATE: Schema = {"type": "string", "enum": list(JOB_STATES)}
TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ERROR: Schema = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}
MESSAGE = ERROR  # every success body also has a message


def obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
CREDENTIALS = obj(["username", "password"], username=STRING, password=STRING)
WORKER = {"simulation_id": STRING, "update_key": STRING}
TASK_STATUS = obj(
    ["task_id", "task_state", "simulated_primaries", "requested_primaries"],
    task_id=INTEGER,
    task_state=STATE,
    simulated_primaries=INTEGER,
    requested_primaries=INTEGER,
    estimated_time={"type": ["integer", "null"]},
    start_time=TIME,
    end_time=TIME,
)
PAGE_META = obj(
    ["page_number", "name", "dimensions"],
    page_number=INTEGER,
    name=STRING,
    dimensions={"type": "array", "items": INTEGER},
)
SIMULATION = obj(
    ["job_id", "title", "start_time", "end_time", "job_state", "sim_type", "input_type"],
    job_id=STRING,
    title=STRING,
    start_time=TIME,
    end_time=TIME,
    job_state=STATE,
    sim_type=STRING,
    input_type=STRING,
    platform=STRING,
    ntasks=INTEGER,
)
SUBMISSION = obj(
    ["sim_type", "ntasks", "input_type"],
    sim_type={"type": "string", "enum": ["shieldhit", "fluka", "geant4", "topas"]},
    ntasks=INTEGER,
    input_type={"type": "string", "enum": ["editor", "files"]},
    sim_data={"type": "object"},
    input_json={"type": "object"},
    input_files={"type": "object", "additionalProperties": STRING},
    title=STRING,
    number_of_primaries=INTEGER,
)
UPDATE_DICT = obj(
    [],
    task_state=STATE,
    simulated_primaries=INTEGER,
    requested_primaries=INTEGER,
    estimated_time={"type": "number"},
    start_time={"type": "string", "format": "date-time"},
    end_time={"type": "string", "format": "date-time"},
)


def param(name: str, required: bool = False, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


JOB_ID = param("job_id", required=True)


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def operation(
    summary: str,
    status: int,
    body: Schema,
    *,
    request: Schema | None = None,
    parameters: list[Schema] | None = None,
    security: str | None = "cookie",
) -> Schema:
    """One operation: its success answer, and errors as `{"message"}` with any 4xx or a 503."""
    responses: Schema = {
        str(status): {"description": "Success", "content": json_content(body)},
        "4XX": {"description": "Client error", "content": json_content(ERROR)},
    }
    spec: Schema = {"summary": summary, "parameters": parameters or [], "responses": responses}
    if request is not None:
        spec["requestBody"] = {"required": True, "content": json_content(request)}
        busy = "Request bodies fill the memory budget: retry after Retry-After seconds"
        responses["503"] = {"description": busy, "content": json_content(ERROR)}
    if security is not None:
        spec["security"] = [{security: []}]
    return spec


def worker_operation(summary: str, **fields: Schema) -> Schema:
    request = obj(["simulation_id"], **WORKER, **fields)
    return operation(summary, 202, MESSAGE, request=request, security=None)


def _paths() -> dict[str, dict[str, Schema]]:
    job_status = obj(
        ["job_state", "job_tasks_status"],
        message=STRING,
        job_state=STATE,
        job_tasks_status={"type": "array", "items": TASK_STATUS},
    )
    estimators = {
        "type": "array",
        "items": obj(["name", "pages"], name=STRING, pages={"type": "array"}),
    }
    results = operation(
        "Results, optionally filtered",
        200,
        obj(["message", "estimators"], message=STRING, estimators=estimators),
        parameters=[
            JOB_ID,
            param("estimator_name"),
            param("page_number"),
            param("page_numbers"),
        ],
    )
    results["responses"]["304"] = {"description": "Not modified (If-None-Match)"}
    return {
        "/": {"get": operation("Liveness", 200, obj(["message", "version"]), security=None)},
        "/openapi.json": {
            "get": operation("This document", 200, {"type": "object"}, security=None)
        },
        "/auth/register": {
            "put": operation("Create an account", 201, MESSAGE, request=CREDENTIALS, security=None)
        },
        "/auth/login": {
            "post": operation(
                "Log in: sets the access_token and refresh_token cookies",
                202,
                obj(
                    ["message", "access_exp", "refresh_exp"],
                    access_exp=INTEGER,
                    refresh_exp=INTEGER,
                ),
                request=CREDENTIALS,
                security=None,
            )
        },
        "/auth/refresh": {
            "get": operation(
                "A new access token",
                200,
                obj(["message", "access_exp"], access_exp=INTEGER),
                security="refreshCookie",
            )
        },
        "/auth/status": {
            "get": operation(
                "Who am I",
                200,
                obj(
                    ["message", "username", "source"],
                    username=STRING,
                    source=STRING,
                    display_name={"type": ["string", "null"]},
                    email={"type": ["string", "null"]},
                ),
            )
        },
        "/auth/logout": {
            "delete": operation("Log out (revokes the refresh token)", 200, MESSAGE, security=None)
        },
        "/auth/keycloak": {
            "post": operation(
                "Sign in with a Keycloak access token (Authorization: Bearer)",
                202,
                obj(["message", "access_exp"], access_exp=INTEGER),
                request=obj(["username"], username=STRING),
                security="keycloak",
            ),
            "delete": operation("Sign out of a Keycloak session", 200, MESSAGE, security=None),
        },
        "/jobs/direct": {
            "post": operation(
                "Submit a simulation",
                202,
                obj(["message", "job_id"], job_id=STRING),
                request=SUBMISSION,
            ),
            "get": operation("Job and task status", 200, job_status, parameters=[JOB_ID]),
            "delete": operation("Cancel a job", 200, MESSAGE, parameters=[JOB_ID]),
        },
        "/jobs/batch": {
            "post": operation(
                "Submit a simulation to an HPC cluster (SSO users only)",
                202,
                obj(["message", "job_id"], job_id=STRING),
                request={
                    **SUBMISSION,
                    "required": [*SUBMISSION["required"], "batch_options"],
                    "properties": {
                        **SUBMISSION["properties"],
                        "batch_options": obj(["cluster_name"], cluster_name=STRING),
                    },
                },
            ),
            "get": operation("Job and task status", 200, job_status, parameters=[JOB_ID]),
            "delete": operation("Cancel a job", 200, MESSAGE, parameters=[JOB_ID]),
        },
        "/jobs": {
            "get": operation("Job and task status", 200, job_status, parameters=[JOB_ID]),
            "post": worker_operation("A merging worker moves the job state", job_state=STATE),
        },
        "/tasks": {
            "post": worker_operation(
                "A worker reports a task's progress", task_id=INTEGER, update_dict=UPDATE_DICT
            )
        },
        "/results": {
            "post": worker_operation("A worker uploads results", estimators=estimators),
            "get": results,
        },
        "/logfiles": {
            "post": worker_operation(
                "A worker uploads log files",
                logfiles={"type": "object", "additionalProperties": STRING},
            ),
            "get": operation(
                "The stored log files",
                200,
                obj(["message", "logfiles"], logfiles={"type": "object"}),
                parameters=[JOB_ID],
            ),
        },
        "/estimators": {
            "get": operation(
                "Estimator and page metadata, no data",
                200,
                obj(
                    ["message", "estimators"],
                    estimators={
                        "type": "array",
                        "items": obj(
                            ["name", "pages"],
                            name=STRING,
                            pages={"type": "array", "items": PAGE_META},
                        ),
                    },
                ),
                parameters=[JOB_ID],
            )
        },
        "/inputs": {
            "get": operation(
                "The submitted input",
                200,
                obj(
                    ["message", "input_type", "input"], input_type=STRING, input={"type": "object"}
                ),
                parameters=[JOB_ID],
            )
        },
        "/user/simulations": {
            "get": operation(
                "The user's simulations, paginated",
                200,
                obj(
                    ["message", "simulations", "page_count", "simulations_count"],
                    simulations={"type": "array", "items": SIMULATION},
                    page_count=INTEGER,
                    simulations_count=INTEGER,
                ),
                parameters=[
                    param("page_size", schema=INTEGER),
                    param("page_idx", schema=INTEGER),
                    param("order_by", schema={"enum": ["start_time", "end_time"]}),
                    param("order_type", schema={"enum": ["ascend", "descend"]}),
                    param("job_state"),
                ],
            ),
            "delete": operation("Delete a finished simulation", 200, MESSAGE, parameters=[JOB_ID]),
        },
        "/user/update": {
            "post": operation(
                "Update the profile or the password",
                200,
                MESSAGE,
                request=obj(
                    [],
                    display_name={"type": ["string", "null"]},
                    email={"type": ["string", "null"]},
                    password=STRING,
                    current_password=STRING,
                ),
            )
        },
        "/clusters": {
            "get": operation(
                "HPC clusters (SSO users only)",
                200,
                obj(["message", "clusters"], clusters={"type": "array"}),
            )
        },
    }


# The web UI's dialect under [ui] api_prefix (server/ui, app.UI_ROUTES): the same operations as
# the API's path of the same name; those it reshapes (server/ui/shapes.py) answer another object.
UI_SAME = {
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
UI_RESHAPED = {
    "/jobs/direct": ["get"],
    "/jobs": ["get"],
    "/jobs/batch": ["get"],
    "/user/simulations": ["get"],
    "/inputs": ["get"],
    "/estimators": ["get"],
    "/results": ["get"],
}


def _ui_paths(api: dict[str, dict[str, Schema]], prefix: str) -> dict[str, dict[str, Schema]]:
    paths: dict[str, dict[str, Schema]] = {}
    for table, reshaped in ((UI_SAME, False), (UI_RESHAPED, True)):
        for path, methods in table.items():
            for method in methods:
                spec = dict(
                    api[path][method], summary=f"The web UI's {api[path][method]['summary']}"
                )
                if reshaped:
                    status = next(code for code in spec["responses"] if code.startswith("2"))
                    answer = {
                        "description": "Success, in the UI's shape",
                        "content": json_content(MESSAGE),
                    }
                    spec["responses"] = {**spec["responses"], status: answer}
                paths.setdefault(prefix.rstrip("/") + path, {})[method] = spec
    return paths


def document(version: str, ui_prefix: str = "/ui") -> Schema:
    """The whole document; `version` is the server's, `ui_prefix` the dialect's mount point."""
    api = _paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "YAPTIDE server",
            "version": version,
            "description": 'Contract: shared/spec/api.md. Errors are {"message": ...}.',
        },
        "paths": {**api, **_ui_paths(api, ui_prefix)},
        "components": {
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "access_token"},
                "refreshCookie": {"type": "apiKey", "in": "cookie", "name": "refresh_token"},
                "keycloak": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            }
        },
    }
