"""The HTTP API (API Gateway REST, IAM-authenticated): submit, list, inspect and steer jobs.

Routes only translate HTTP to one use case in `spotrun.jobs` and answer with a view model (which is
also what the OpenAPI document, served at GET /openapi.json, says they answer); errors become
status codes in one place, the exception handlers below. Request bodies are decoded once, by
`load_document` (a key given twice is an error), and validated once, by the resolver.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from spotrun import jobs
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.model import Desired, Job, JobState, Market, Task, TaskState, TimelineEvent
from spotrun.domain.spec import MAX_TASKS, JobSpec, SpecError, load_document, problems_of
from spotrun.domain.waiting import Waiting
from spotrun.handlers.common import logger, metrics, tracer
from spotrun.handlers.http import ErrorBody, on_error

app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=load_document)

JobId = Annotated[str, Path(pattern=r"^j-[0-9a-f]{20}$", description="a job id, like j-0194f3a2b1c0a1b2c3d4")]
TaskIndex = Annotated[int, Path(ge=0, le=MAX_TASKS)]  # the combine task comes after the last task
Limit = Annotated[int, Query(ge=1, le=100)]
PageToken = Annotated[str | None, Query(max_length=2048)]
# Times as Python writes them ('2026-11-23T12:00:00+00:00'), as the API always has.
Moment = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
                   WithJsonSchema({"type": "string", "format": "date-time"})]


# ---------------------------------------------------------------- what the routes answer

class Accepted(BaseModel):
    job_id: str
    state: str
    created: bool
    tasks: int


class PoolWaitView(BaseModel):
    pool: str
    why: str
    since: Moment | None
    until: Moment | None


class WaitingView(BaseModel):
    """Why the job's queued tasks wait, and what happens next."""

    queued: int
    summary: str
    pools: list[PoolWaitView] = Field(description="the pools holding the tasks back: refused (EC2's error), "
                                                   "reclaimed or full, since when, cooling down until when")
    next_try_at: Moment | None = Field(description="when the scheduler tries again at the latest")
    deadline_policy: str | None = Field(description="what the deadline policy decides now (jobs with a deadline)")
    on_demand: str = Field(description="whether the on-demand fallback steps in, and why (not)")

    @classmethod
    def of(cls, waiting: Waiting) -> WaitingView:
        return cls(queued=waiting.queued, summary=waiting.summary,
                   pools=[PoolWaitView(pool=p.pool, why=p.why, since=p.since, until=p.until) for p in waiting.pools],
                   next_try_at=waiting.next_try_at, deadline_policy=waiting.deadline_policy,
                   on_demand=waiting.on_demand)


class JobView(BaseModel):
    job_id: str
    name: str
    state: JobState
    desired: Desired
    reason: str = Field("", description="what to know beyond the counts, e.g. that the combine step will not run")
    tasks: int
    combine: bool
    counts: dict[str, int]
    active: int
    created_at: Moment
    updated_at: Moment
    spec: dict[str, Any]
    waiting: WaitingView | None = Field(None, description="why queued tasks wait (in GET /jobs/{id} only)")

    @classmethod
    def of(cls, job: Job, waiting: Waiting | None = None) -> JobView:
        return cls(job_id=job.job_id, name=job.name, state=job.state, desired=job.desired, reason=job.reason,
                   tasks=job.task_count, combine=job.has_combine, counts={k: v for k, v in job.counts.items() if v},
                   active=job.active, created_at=job.created_at, updated_at=job.updated_at, spec=job.spec,
                   waiting=WaitingView.of(waiting) if waiting else None)


class CheckpointView(BaseModel):
    seq: int
    attempt: int
    bytes: int
    committed_at: Moment
    final_checkpoint: str | None = None  # "final checkpoint fits warning: no, predicted 140 s"
    predicted_final_seconds: float | None = None
    final_fits_warning: bool | None = None
    ranks: int = 1  # a gang checkpoint holds a part of each rank, named by its one manifest


class RankView(BaseModel):
    """One rank of a gang task's current attempt, and the instance it runs on."""

    rank: int
    instance_id: str


class TaskView(BaseModel):
    index: int
    kind: str
    state: TaskState
    attempt: int
    desired: Desired
    pool: str | None
    market: Market | None
    instance_id: str | None
    nodes: int = 1  # instances the task runs on together (a gang)
    ranks: list[RankView] = []  # a gang's current instances, by rank
    progress: float | None
    program_failures: int
    environment_failures: int
    interruptions: int
    exit_code: int | None
    reason: str
    log_tail: str
    last_heartbeat_at: Moment | None
    checkpoint: CheckpointView | None
    launched_at: Moment | None
    started_at: Moment | None
    finished_at: Moment | None

    @classmethod
    def of(cls, task: Task) -> TaskView:
        pointer = task.checkpoint
        return cls(
            index=task.index, kind=task.kind, state=task.state, attempt=task.attempt, desired=task.desired,
            pool=task.pool, market=task.market, instance_id=task.instance_id, progress=task.progress,
            nodes=task.nodes, ranks=[RankView(rank=rank, instance_id=instance_id)
                                     for rank, instance_id in enumerate(task.gang_instances)],
            program_failures=task.program_failures, environment_failures=task.environment_failures,
            interruptions=task.interruptions, exit_code=task.exit_code, reason=task.reason, log_tail=task.log_tail,
            last_heartbeat_at=task.last_heartbeat_at,
            checkpoint=None if pointer is None else CheckpointView(
                seq=pointer.seq, attempt=pointer.attempt, bytes=pointer.size_bytes, committed_at=pointer.committed_at,
                final_checkpoint=pointer.final_note, predicted_final_seconds=pointer.predicted_final_seconds,
                final_fits_warning=pointer.final_fits_warning, ranks=pointer.ranks),
            launched_at=task.launched_at, started_at=task.started_at, finished_at=task.finished_at,
        )


class EventView(BaseModel):
    at: Moment
    kind: str
    task: int | None
    attempt: int | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: TimelineEvent) -> EventView:
        return cls(at=event.at, kind=event.kind, task=event.index, attempt=event.attempt, detail=event.detail)


class JobPage(BaseModel):
    jobs: list[JobView]
    next_token: str | None


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_token: str | None


class Timeline(BaseModel):
    events: list[EventView]


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255)


class UploadUrl(BaseModel):
    url: str
    uri: str


class Outputs(BaseModel):
    outputs: list[dict[str, Any]]


class CheckpointRequested(BaseModel):
    job_id: str
    tasks: list[int] = Field(description="the running tasks asked for a checkpoint now")


class LogLineView(BaseModel):
    at: Moment
    message: str


class LogPageView(BaseModel):
    job_id: str
    task: int
    attempt: int = Field(description="the attempt whose log this is (0: the task never ran)")
    events: list[LogLineView]
    next_token: str = Field(description="reads on after these lines: ask again with it to follow the log")
    kept: bool = Field(description="false when this deployment keeps no attempt logs")

    @classmethod
    def of(cls, page: jobs.LogPage) -> LogPageView:
        return cls(job_id=page.job_id, task=page.index, attempt=page.attempt, next_token=page.token, kept=page.kept,
                   events=[LogLineView(at=line.at, message=line.message) for line in page.lines])


_ERRORS = {400: "invalid request", 404: "no such job, task or route", 409: "not allowed in the job's or task's state",
           415: "the body is not sent as JSON (Content-Type application/json)"}


def _answers(status: int, *errors: int) -> dict[int, Any]:
    """The OpenAPI responses of a route: its success (the shape its return annotation names) and the
    errors it can answer with."""
    answers: dict[int, Any] = {status: {"description": HTTPStatus(status).phrase}}
    for code in (400, *errors):
        answers[code] = {"description": _ERRORS[code], "content": {"application/json": {"model": ErrorBody}}}
    return answers


def _cp() -> ControlPlane:
    cp: ControlPlane = app.context["cp"]
    return cp


def _owner() -> str:
    identity = app.current_event.request_context.identity
    return identity.user_arn or identity.caller or "anonymous"


# ---------------------------------------------------------------- routes

@app.post("/jobs", summary="Submit a job", status_code=202, responses=_answers(202, 415))
def submit(
    spec: Annotated[JobSpec, Body(description="the job spec")],
    idempotency_key: Annotated[str | None, Query(alias="idempotency_key", max_length=128)] = None,
) -> Accepted:
    job, created = jobs.submit_spec(_cp(), spec, _owner(), idempotency_key)
    return Accepted(job_id=job.job_id, state=job.state, created=created, tasks=job.task_count)


@app.get("/jobs", summary="List jobs, newest first", responses=_answers(200))
def list_jobs(state: Annotated[JobState | None, Query()] = None, limit: Limit = 20,
              next_token: PageToken = None) -> JobPage:
    found, token = jobs.list_jobs(_cp(), state, limit, next_token)
    return JobPage(jobs=[JobView.of(j) for j in found], next_token=token)


@app.get("/jobs/<job_id>", summary="A job with its task counts", responses=_answers(200, 404))
def get_job(job_id: JobId) -> JobView:
    return JobView.of(*jobs.job_status(_cp(), job_id))


@app.get("/jobs/<job_id>/tasks", summary="A job's tasks", responses=_answers(200, 404))
def list_tasks(job_id: JobId, state: Annotated[TaskState | None, Query()] = None, limit: Limit = 100,
               next_token: PageToken = None) -> TaskPage:
    found, token = jobs.list_tasks(_cp(), job_id, state, limit, next_token)
    return TaskPage(tasks=[TaskView.of(t) for t in found], next_token=token)


@app.get("/jobs/<job_id>/tasks/<index>", summary="One task", responses=_answers(200, 404))
def get_task(job_id: JobId, index: TaskIndex) -> TaskView:
    return TaskView.of(jobs.get_task(_cp(), job_id, index))


@app.get("/jobs/<job_id>/events", summary="The job's timeline, oldest first", responses=_answers(200, 404))
def events(job_id: JobId, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
           after: Annotated[str | None, Query(max_length=200)] = None) -> Timeline:
    return Timeline(events=[EventView.of(e) for e in jobs.timeline(_cp(), job_id, limit, after)])


@app.get("/jobs/<job_id>/stats", summary="Tasks, failures and interruptions per pool, times, costs, speedup",
         responses=_answers(200, 404))
def stats(job_id: JobId) -> dict[str, Any]:
    return jobs.statistics(_cp(), job_id)


@app.get("/jobs/<job_id>/tasks/<index>/logs", summary="An attempt's log (agent and program output), oldest first",
         responses=_answers(200, 404))
def task_log(job_id: JobId, index: TaskIndex,
             attempt: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="default: the current one")] = None,
             limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
             newest: Annotated[bool, Query(description="the newest `limit` lines instead of the oldest")] = False,
             next_token: Annotated[str | None, Query(max_length=512)] = None) -> LogPageView:
    return LogPageView.of(jobs.task_log(_cp(), job_id, index, attempt, next_token, limit, newest))


# Before the job action route below, which would take 'checkpoint' for an action it does not know.
@app.post("/jobs/<job_id>/checkpoint", summary="Checkpoint every running task of the job now", status_code=202,
          responses=_answers(202, 404, 409))
def checkpoint_job(job_id: JobId) -> CheckpointRequested:
    return CheckpointRequested(job_id=job_id, tasks=jobs.request_checkpoint(_cp(), job_id, None, _owner()))


@app.post("/jobs/<job_id>/tasks/<index>/checkpoint", summary="Checkpoint one running task now", status_code=202,
          responses=_answers(202, 404, 409))
def checkpoint_task(job_id: JobId, index: TaskIndex) -> CheckpointRequested:
    return CheckpointRequested(job_id=job_id, tasks=jobs.request_checkpoint(_cp(), job_id, index, _owner()))


@app.post("/jobs/<job_id>/<action>", summary="Cancel (kill), suspend or resume a job", status_code=202,
          responses=_answers(202, 404, 409))
def control(job_id: JobId, action: Annotated[str, Path(pattern="^(cancel|suspend|resume)$")]) -> JobView:
    return JobView.of(jobs.control_job(_cp(), job_id, action, _owner()))


@app.post("/jobs/<job_id>/tasks/<index>/cancel", summary="Cancel one task", status_code=202,
          responses=_answers(202, 404, 409))
def cancel_task(job_id: JobId, index: TaskIndex) -> TaskView:
    return TaskView.of(jobs.cancel_task(_cp(), job_id, index, _owner()))


@app.post("/uploads", summary="A presigned URL to upload one input file", responses=_answers(200, 415))
def upload(request: Annotated[UploadRequest, Body()]) -> UploadUrl:
    return UploadUrl(**jobs.upload_url(_cp(), _owner(), request.filename))


@app.get("/jobs/<job_id>/outputs", summary="Presigned URLs of the job's outputs", responses=_answers(200, 404))
def outputs(job_id: JobId) -> Outputs:
    return Outputs(outputs=jobs.output_urls(_cp(), job_id))


@app.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=HTTPStatus.OK, content_type="application/json", body=app.get_openapi_json_schema(
        title="spotrun", version="1.0.0"))


# ---------------------------------------------------------------- errors, in one place

def _refuse(status: HTTPStatus, error: str, problems: list[dict[str, str]] | None = None) -> Response[str]:
    body = ErrorBody.model_validate({"error": error, "problems": problems})
    return Response(status_code=status, content_type="application/json", body=body.model_dump_json(exclude_none=True))


@on_error(app, SpecError)  # an invalid spec, or a body that is no JSON document (DocumentError)
def _spec_error(error: SpecError) -> Response[str]:
    return _refuse(HTTPStatus.BAD_REQUEST, error.summary, error.problems)


@on_error(app, RequestValidationError)
def _request_error(error: RequestValidationError) -> Response[str]:
    def located(item: dict[str, Any]) -> dict[str, Any]:
        location = [str(p) for p in item.get("loc", ())]
        if location and location[0] in ("body", "query", "path"):
            location = location[1:]
        if item.get("type") == "json_invalid":
            location = []  # its location is a character offset in the body, not a field
        return {**{k: item[k] for k in ("type", "input", "ctx") if k in item}, "loc": location,
                "msg": item.get("msg", "invalid")}

    return _refuse(HTTPStatus.BAD_REQUEST, "invalid request", problems_of([located(e) for e in error.errors()]))


@on_error(app, RequestUnsupportedContentType)  # Powertools' own answer has another shape
def _not_json(_: RequestUnsupportedContentType) -> Response[str]:
    return _refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the body must be sent as JSON (Content-Type: application/json)")


@on_error(app, jobs.NotFound)
def _not_found(error: jobs.NotFound) -> Response[str]:
    return _refuse(HTTPStatus.NOT_FOUND, str(error))


@on_error(app, jobs.Conflict)
def _conflict(error: jobs.Conflict) -> Response[str]:
    return _refuse(HTTPStatus.CONFLICT, str(error))


@on_error(app, ValueError)  # e.g. a page token this API never gave out
def _bad_value(error: ValueError) -> Response[str]:
    return _refuse(HTTPStatus.BAD_REQUEST, str(error))


@app.not_found
def _no_route(_: Exception) -> Response[str]:
    return _refuse(HTTPStatus.NOT_FOUND, f"no route {app.current_event.http_method} {app.current_event.path}")


# Neither the request nor the answer is logged or traced: they hold job specs (the tasks' environment),
# program output and presigned URLs.
@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext, control: ControlPlane | None = None) -> dict[str, Any]:
    app.context["cp"] = control or default_control_plane()
    return app.resolve(event, context)
