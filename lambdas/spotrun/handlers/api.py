"""The HTTP API (API Gateway REST, IAM-authenticated): submit, list, inspect and steer jobs.

Routes only translate HTTP to one use case in `spotrun.jobs`; errors become status codes in one
place (the exception handlers below). The OpenAPI document is served at GET /openapi.json.
"""

from __future__ import annotations

import json
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field

from spotrun import jobs
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.model import Desired, Job, JobState, Market, Task, TaskState, TimelineEvent
from spotrun.domain.spec import JobSpec, SpecError, load_document
from spotrun.handlers.common import logger, metrics, tracer

app = APIGatewayRestResolver(enable_validation=True)

JobId = Annotated[str, Path(pattern=r"^j-[0-9a-f]{20}$", description="a job id, like j-0194f3a2b1c0a1b2c3d4")]
Limit = Annotated[int, Query(ge=1, le=100)]


class Accepted(BaseModel):
    job_id: str
    state: str
    created: bool
    tasks: int


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255)


# What the routes answer, for the OpenAPI document (the views below build the same shapes).

class Problem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    error: str
    problems: list[Problem] | None = Field(None, description="each wrong field of an invalid request")


class JobView(BaseModel):
    job_id: str
    name: str
    state: JobState
    desired: Desired
    tasks: int
    combine: bool
    counts: dict[str, int]
    active: int
    created_at: datetime
    updated_at: datetime
    spec: dict[str, Any]


class CheckpointView(BaseModel):
    seq: int
    attempt: int
    bytes: int
    committed_at: datetime


class TaskView(BaseModel):
    index: int
    kind: str
    state: TaskState
    attempt: int
    desired: Desired
    pool: str | None
    market: Market | None
    instance_id: str | None
    progress: float | None
    program_failures: int
    environment_failures: int
    interruptions: int
    exit_code: int | None
    reason: str
    log_tail: str
    last_heartbeat_at: datetime | None
    checkpoint: CheckpointView | None
    launched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class EventView(BaseModel):
    at: datetime
    kind: str
    task: int | None
    attempt: int | None
    detail: dict[str, Any]


class JobPage(BaseModel):
    jobs: list[JobView]
    next_token: str | None


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_token: str | None


class Timeline(BaseModel):
    events: list[EventView]


class UploadUrl(BaseModel):
    url: str
    uri: str


class Outputs(BaseModel):
    outputs: list[dict[str, Any]]


_ERRORS = {400: "invalid request", 404: "no such job, task or route", 409: "not allowed in the job's or task's state"}


def _answers(status: int, model: Any, *errors: int) -> dict[int, Any]:
    """The OpenAPI responses of a route: its success and the errors it can answer with."""
    answers: dict[int, Any] = {status: {"description": HTTPStatus(status).phrase,
                                        "content": {"application/json": {"model": model}}}}
    for code in (400, *errors):
        answers[code] = {"description": _ERRORS[code], "content": {"application/json": {"model": ErrorBody}}}
    return answers


def _json(status: HTTPStatus, body: Any) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _cp() -> ControlPlane:
    return app.context["cp"]


def _owner() -> str:
    identity = app.current_event.request_context.identity
    return identity.user_arn or identity.caller or "anonymous"


def job_view(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id, "name": job.name, "state": job.state, "desired": job.desired, "tasks": job.task_count,
        "combine": job.has_combine, "counts": {k: v for k, v in job.counts.items() if v}, "active": job.active,
        "created_at": job.created_at, "updated_at": job.updated_at, "spec": job.spec,
    }


def task_view(task: Task) -> dict[str, Any]:
    return {
        "index": task.index, "kind": task.kind, "state": task.state, "attempt": task.attempt, "desired": task.desired,
        "pool": task.pool, "market": task.market, "instance_id": task.instance_id, "progress": task.progress,
        "program_failures": task.program_failures, "environment_failures": task.environment_failures,
        "interruptions": task.interruptions, "exit_code": task.exit_code, "reason": task.reason,
        "log_tail": task.log_tail, "last_heartbeat_at": task.last_heartbeat_at,
        "checkpoint": None if task.checkpoint is None else {
            "seq": task.checkpoint.seq, "attempt": task.checkpoint.attempt, "bytes": task.checkpoint.size_bytes,
            "committed_at": task.checkpoint.committed_at,
        },
        "launched_at": task.launched_at, "started_at": task.started_at, "finished_at": task.finished_at,
    }


def event_view(event: TimelineEvent) -> dict[str, Any]:
    return {"at": event.at, "kind": event.kind, "task": event.index, "attempt": event.attempt, "detail": event.detail}


@app.post("/jobs", summary="Submit a job", responses=_answers(202, Accepted))
def submit(
    spec: Annotated[JobSpec, Body(description="the job spec")],
    idempotency_key: Annotated[str | None, Query(alias="idempotency_key", max_length=128)] = None,
):
    document = load_document(app.current_event.body or "{}")
    job, created = jobs.submit_job(_cp(), document, _owner(), idempotency_key)
    body = Accepted(job_id=job.job_id, state=job.state, created=created, tasks=job.task_count)
    return _json(HTTPStatus.ACCEPTED, body.model_dump())


@app.get("/jobs", summary="List jobs, newest first", responses=_answers(200, JobPage))
def list_jobs(state: Annotated[JobState | None, Query()] = None, limit: Limit = 20,
              next_token: Annotated[str | None, Query(max_length=2048)] = None):
    found, token = jobs.list_jobs(_cp(), state, limit, next_token)
    return _json(HTTPStatus.OK, {"jobs": [job_view(j) for j in found], "next_token": token})


@app.get("/jobs/<job_id>", summary="A job with its task counts", responses=_answers(200, JobView, 404))
def get_job(job_id: JobId):
    return _json(HTTPStatus.OK, job_view(jobs.get_job(_cp(), job_id)))


@app.get("/jobs/<job_id>/tasks", summary="A job's tasks", responses=_answers(200, TaskPage, 404))
def list_tasks(job_id: JobId, state: Annotated[TaskState | None, Query()] = None, limit: Limit = 100,
               next_token: Annotated[str | None, Query(max_length=2048)] = None):
    found, token = jobs.list_tasks(_cp(), job_id, state, limit, next_token)
    return _json(HTTPStatus.OK, {"tasks": [task_view(t) for t in found], "next_token": token})


@app.get("/jobs/<job_id>/tasks/<index>", summary="One task", responses=_answers(200, TaskView, 404))
def get_task(job_id: JobId, index: Annotated[int, Path(ge=0, le=100_000)]):
    return _json(HTTPStatus.OK, task_view(jobs.get_task(_cp(), job_id, index)))


@app.get("/jobs/<job_id>/events", summary="The job's timeline, oldest first", responses=_answers(200, Timeline, 404))
def events(job_id: JobId, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
           after: Annotated[str | None, Query(max_length=200)] = None):
    found = jobs.timeline(_cp(), job_id, limit, after)
    return _json(HTTPStatus.OK, {"events": [event_view(e) for e in found]})


@app.get("/jobs/<job_id>/stats", summary="Tasks, failures and interruptions per pool, times, costs, speedup",
         responses=_answers(200, dict[str, Any], 404))
def stats(job_id: JobId):
    return _json(HTTPStatus.OK, jobs.statistics(_cp(), job_id))


@app.post("/jobs/<job_id>/<action>", summary="Cancel (kill), suspend or resume a job",
          responses=_answers(202, JobView, 404, 409))
def control(job_id: JobId, action: Annotated[str, Path(pattern="^(cancel|suspend|resume)$")]):
    return _json(HTTPStatus.ACCEPTED, job_view(jobs.control_job(_cp(), job_id, action)))


@app.post("/jobs/<job_id>/tasks/<index>/cancel", summary="Cancel one task", responses=_answers(202, TaskView, 404, 409))
def cancel_task(job_id: JobId, index: Annotated[int, Path(ge=0, le=100_000)]):
    return _json(HTTPStatus.ACCEPTED, task_view(jobs.cancel_task(_cp(), job_id, index)))


@app.post("/uploads", summary="A presigned URL to upload one input file", responses=_answers(200, UploadUrl))
def upload(request: Annotated[UploadRequest, Body()]):
    return _json(HTTPStatus.OK, jobs.upload_url(_cp(), _owner(), request.filename))


@app.get("/jobs/<job_id>/outputs", summary="Presigned URLs of the job's outputs", responses=_answers(200, Outputs, 404))
def outputs(job_id: JobId):
    return _json(HTTPStatus.OK, {"outputs": jobs.output_urls(_cp(), job_id)})


@app.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
def openapi():
    return Response(status_code=HTTPStatus.OK, content_type="application/json", body=app.get_openapi_json_schema(
        title="spotrun", version="1.0.0"))


@app.exception_handler(SpecError)
def _spec_error(error: SpecError) -> Response:
    return _json(HTTPStatus.BAD_REQUEST, {"error": "invalid job spec", "problems": error.problems})


@app.exception_handler(RequestValidationError)
def _request_error(error: RequestValidationError) -> Response:
    problems = []
    for item in error.errors():
        location = [str(p) for p in item.get("loc", ())]
        if location and location[0] == "body" or location and location[0] in ("query", "path"):
            location = location[1:]
        if item.get("type") == "json_invalid":
            location = []  # its location is a character offset in the body, not a field
        problems.append({"field": ".".join(location) or "(body)", "problem": item.get("msg", "invalid")})
    return _json(HTTPStatus.BAD_REQUEST, {"error": "invalid request", "problems": problems})


@app.exception_handler(jobs.NotFound)
def _not_found(error: jobs.NotFound) -> Response:
    return _json(HTTPStatus.NOT_FOUND, {"error": str(error)})


@app.exception_handler(jobs.Conflict)
def _conflict(error: jobs.Conflict) -> Response:
    return _json(HTTPStatus.CONFLICT, {"error": str(error)})


@app.exception_handler(ValueError)
def _bad_value(error: ValueError) -> Response:
    return _json(HTTPStatus.BAD_REQUEST, {"error": str(error)})


@app.exception_handler(RecursionError)
def _too_deep(_: RecursionError) -> Response:
    # The body's JSON is nested deeper than the decoder goes (e.g. 100 000 '['): Powertools' own
    # decoding raises this before any route runs.
    return _json(HTTPStatus.BAD_REQUEST, {"error": "invalid request",
                                          "problems": [{"field": "(body)", "problem": "the JSON is nested too deeply"}]})


@app.not_found
def _no_route(_: Exception) -> Response:
    return _json(HTTPStatus.NOT_FOUND, {"error": f"no route {app.current_event.http_method} {app.current_event.path}"})


# Neither the request nor the answer is logged or traced: they hold job specs (the tasks' environment),
# program output and presigned URLs.
@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> dict[str, Any]:
    app.append_context(cp=control or default_control_plane())
    return app.resolve(event, context)
