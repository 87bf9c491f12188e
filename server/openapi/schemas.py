"""The building blocks of the OpenAPI document: shared schemas, parameters and operations."""

from typing import Any

from server.accounts.passwords import MIN_PASSWORD
from server.accounts.profile import MAX_DISPLAY_NAME, MAX_EMAIL
from server.jobs.reports import MAX_LOGFILE_NAME
from server.jobs.states import JOB_STATES
from server.jobs.submission import MAX_TITLE
from server.results.upload import MAX_NAME
from server.values import MAX_INT32, MAX_INT64

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


NO_NUL = "^[^\\u0000]*$"  # PostgreSQL's text holds no NUL


def obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def integer(minimum: int, maximum: int | None = None, description: str = "") -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema | ({"description": description} if description else {})


def text(max_length: int) -> Schema:
    """A string of at most `max_length` characters, none of them NUL (PostgreSQL's text)."""
    return {"type": "string", "maxLength": max_length, "pattern": NO_NUL}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT = integer(0, MAX_INT64)
CREDENTIALS = obj(["username", "password"], username=STRING, password=STRING)
REGISTRATION = obj(
    ["username", "password"],
    username={"type": "string", "pattern": "^[A-Za-z0-9._-]{3,64}$"},
    password={"type": "string", "minLength": MIN_PASSWORD},
)
PROFILE = obj(
    [],
    display_name={"type": ["string", "null"], "maxLength": MAX_DISPLAY_NAME},
    email={"type": ["string", "null"], "maxLength": MAX_EMAIL, "pattern": "@"},
    password={"type": "string", "minLength": MIN_PASSWORD},
    current_password=STRING,
)
WORKER = {
    "simulation_id": {"type": "string", "minLength": 1, "pattern": NO_NUL},
    "update_key": STRING,
}
PAGE_NUMBER = {  # or its decimal string, as the existing platform's workers send it
    "anyOf": [integer(0, MAX_INT32), {"type": "string", "pattern": "^\\s*(-?0+|[0-9]{1,20})\\s*$"}]
}
PAGE: Schema = {  # its number at the top or in its metadata, unique in its estimator
    "type": "object",
    "anyOf": [
        obj(["page_number"], page_number=PAGE_NUMBER),
        obj(  # read there when the page has none (or null)
            ["metadata"],
            page_number={"type": "null"},
            metadata=obj(["page_number"], page_number=PAGE_NUMBER),
        ),
    ],
}
ESTIMATORS: Schema = {
    "type": "array",
    "items": obj(
        ["name", "pages"],
        name={**text(MAX_NAME), "minLength": 1},
        pages={"type": "array", "items": PAGE},
    ),
}
LOGFILES: Schema = {
    "type": "object",
    "propertyNames": {"minLength": 1, "maxLength": MAX_LOGFILE_NAME, "pattern": NO_NUL},
    "additionalProperties": STRING,
}
STATES_LIST = "({0})(,({0}))*".format("|".join(JOB_STATES))
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
    ntasks=integer(1, 9999, "at most the server's jobs.max_ntasks (1000 unless configured)"),
    input_type={"type": "string", "enum": ["editor", "files"]},
    sim_data={"type": "object"},
    input_json={"type": "object"},
    input_files={"type": "object", "additionalProperties": STRING},
    title=text(MAX_TITLE),
    number_of_primaries=COUNT,
)
MOMENT: Schema = {"type": "string", "format": "date-time", "description": "in 1970 to 9998"}
UPDATE_DICT = obj(
    [],
    task_state=STATE,
    simulated_primaries=COUNT,
    requested_primaries=COUNT,
    estimated_time={"type": "number", "minimum": 0, "maximum": MAX_INT32},
    start_time=MOMENT,
    end_time=MOMENT,
)
TASK_ID = integer(1, MAX_INT32)


def param(name: str, required: bool = False, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


JOB_ID = param("job_id", required=True, schema={"type": "string", "minLength": 1})


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
    """The update key in the body (`update_key`) or the Authorization header (`updateKey`):
    either, so neither is required; every other field is."""
    request = obj(["simulation_id", *fields], **WORKER, **fields)
    spec = operation(summary, 202, MESSAGE, request=request, security=None)
    spec["security"] = [{"updateKey": []}, {}]
    return spec
