"""The building blocks of the OpenAPI document: shared schemas, parameters and operations."""

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


RETRY = "retry after Retry-After seconds"
UNAVAILABLE = f"The database is unavailable or out of disk space: {RETRY}"


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
        "503": {"description": UNAVAILABLE, "content": json_content(ERROR)},
    }
    spec: Schema = {"summary": summary, "parameters": parameters or [], "responses": responses}
    if request is not None:
        spec["requestBody"] = {"required": True, "content": json_content(request)}
        busy = f"The database is unavailable or full, or bodies fill the memory budget: {RETRY}"
        responses["503"] = {"description": busy, "content": json_content(ERROR)}
    if security is not None:
        spec["security"] = [{security: []}]
    return spec


def worker_operation(summary: str, **fields: Schema) -> Schema:
    # The key may come in the Authorization header instead; every other field is required.
    request = obj(["simulation_id", *fields], **WORKER, **fields)
    return operation(summary, 202, MESSAGE, request=request, security=None)
