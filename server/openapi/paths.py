"""The API's paths in the OpenAPI document: one entry per route of server.app.ROUTES, written
from shared/spec/api.md and the seeds."""

from server.jobs.listing import MAX_PAGE_SIZE
from server.openapi.schemas import (
    CREDENTIALS,
    ESTIMATORS,
    INTEGER,
    JOB_ID,
    LOGFILES,
    MESSAGE,
    PAGE_META,
    PROFILE,
    REGISTRATION,
    RETRY,
    SIMULATION,
    STATE,
    STATES_LIST,
    STRING,
    SUBMISSION,
    TASK_ID,
    TASK_STATUS,
    UPDATE_DICT,
    Schema,
    integer,
    obj,
    operation,
    param,
    worker_operation,
)


def api_paths() -> dict[str, dict[str, Schema]]:
    job_status = obj(
        ["job_state", "job_tasks_status"],
        message=STRING,
        job_state=STATE,
        job_tasks_status={"type": "array", "items": TASK_STATUS},
    )
    results = operation(
        "Results, optionally filtered",
        200,
        obj(["message", "estimators"], message=STRING, estimators=ESTIMATORS),
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
            "put": operation("Create an account", 201, MESSAGE, request=REGISTRATION, security=None)
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
            "delete": operation(
                "Log out (ends the sessions of the cookies it clears)", 200, MESSAGE, security=None
            )
        },
        "/auth/keycloak": {
            "post": _realm_may_be_down(
                operation(
                    "Sign in with a Keycloak access token (Authorization: Bearer)",
                    202,
                    obj(["message", "access_exp"], access_exp=INTEGER),
                    request=obj(["username"], username=STRING),
                    security="keycloak",
                )
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
            "get": operation(
                "Job and task status (SSO users only)", 200, job_status, parameters=[JOB_ID]
            ),
            "delete": operation("Cancel a job (SSO users only)", 200, MESSAGE, parameters=[JOB_ID]),
        },
        "/jobs": {
            "get": operation("Job and task status", 200, job_status, parameters=[JOB_ID]),
            "post": worker_operation("A merging worker moves the job state", job_state=STATE),
        },
        "/tasks": {
            "post": worker_operation(
                "A worker reports a task's progress", task_id=TASK_ID, update_dict=UPDATE_DICT
            )
        },
        "/results": {
            "post": worker_operation("A worker uploads results", estimators=ESTIMATORS),
            "get": results,
        },
        "/logfiles": {
            "post": worker_operation(
                "A worker uploads log files",
                logfiles=LOGFILES,
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
                    param("page_size", schema=integer(1, MAX_PAGE_SIZE)),
                    param("page_idx", schema=integer(1)),
                    param("order_by", schema={"enum": ["start_time", "end_time"]}),
                    param("order_type", schema={"enum": ["ascend", "descend"]}),
                    param("job_state", schema={"type": "string", "pattern": f"^{STATES_LIST}$"}),
                ],
            ),
            "delete": operation("Delete a finished simulation", 200, MESSAGE, parameters=[JOB_ID]),
        },
        "/user/update": {
            "post": operation(
                "Update the profile or the password",
                200,
                MESSAGE,
                request={
                    **PROFILE,
                    "minProperties": 1,
                    "additionalProperties": False,
                    "dependentRequired": {
                        "password": ["current_password"],
                        "current_password": ["password"],
                    },
                },
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


def _realm_may_be_down(spec: Schema) -> Schema:
    """A sign-in also answers 503 when the realm's keys cannot be had (unreachable, slow)."""
    unavailable = spec["responses"]["503"]
    down = f"The database or the identity provider is unavailable: {RETRY}"
    spec["responses"]["503"] = {**unavailable, "description": down}
    return spec
