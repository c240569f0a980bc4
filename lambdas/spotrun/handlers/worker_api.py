"""The worker routes (`POST /worker/<operation>` on this function's own URL, AuthType AWS_IAM): the only
control-plane calls an instance's own role may make. The caller's instance is read from its signed
identity (Lambda puts the SigV4 signer in `requestContext.authorizer.iam`; the session name of an
instance-profile session is the instance id), never from the request body. The instance role may invoke
this function only through its URL (`lambda:InvokedViaFunctionUrl`), so that identity is Lambda's, not
a caller's made-up event.

    session     the attempt this instance serves, its job spec, and task-role credentials (renewal too)
    claim       LAUNCHING -> RUNNING for that attempt
    checkpoint  move the task's pointer to a checkpoint uploaded under its own prefix
    restored    note on the timeline that the attempt restored a checkpoint
    next        instance reuse: the job's next queued task for this instance

Each operation is declared once below (its request model, its use case, its answer model), and every
refusal is mapped to its status code in one place (`_REFUSALS`). The event is a function URL's (payload
format 2.0) and the answer its response (statusCode, headers, body). Not a Powertools resolver, unlike
the users' API: a resolver keeps the request it is resolving on a class attribute shared by every
resolver in the process, and these routes are answered concurrently in one process by the local runtime
(as Lambda answers them from concurrent invocations), which would mix requests up.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spotrun import assignments
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.messages import MAX_ATTEMPT
from spotrun.domain.spec import SpecError, load_document, problems_of
from spotrun.handlers.common import instrumented, logger, metrics
from spotrun.handlers.http import ErrorBody

# arn:aws:sts::<account>:assumed-role/<role name>/<session name>
_ASSUMED_ROLE = re.compile(r"^arn:aws[\w-]*:sts::\d{12}:assumed-role/(?P<role>[\w+=,.@-]{1,64})/"
                           r"(?P<session>[\w+=,.@-]{2,64})$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
MAX_BODY_CHARS = 4096
ROUTES_PREFIX = "/worker/"  # the operations' paths on the function URL: /worker/<operation>


# ---------------------------------------------------------------- requests

class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttemptRequest(Request):
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)


# How long a checkpoint (capture and upload) or a restore (download) took, for the operators' metrics.
Took = Annotated[float | None, Field(ge=0, le=7 * 86_400, allow_inf_nan=False)]


class CommitRequest(AttemptRequest):
    seq: int = Field(ge=1, le=10**8 - 1)
    size_bytes: int = Field(ge=0, le=2**53)
    method: str = Field(pattern=r"^[a-z]{1,16}$")
    committed_at: datetime
    predicted_final_seconds: float | None = Field(None, ge=0, le=10**7)
    final_fits_warning: bool | None = None
    capture_bytes_per_second: float | None = Field(None, ge=0, le=10**13)
    upload_bytes_per_second: float | None = Field(None, ge=0, le=10**13)
    final_budget_seconds: float | None = Field(None, ge=0, le=10**5)
    seconds: Took = None
    ranks: int = Field(1, ge=1, le=64)  # a gang checkpoint's parts, one per rank


class RestoredRequest(AttemptRequest):
    seq: int = Field(ge=1, le=10**8 - 1)
    from_attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    seconds: Took = None


# ---------------------------------------------------------------- answers

class Session(BaseModel):
    job_id: str
    index: int
    attempt: int
    instance_id: str
    kind: str
    spec: dict[str, Any]
    credentials: dict[str, str] | None
    rank: int = 0  # the instance's place in a gang task


class Claimed(BaseModel):
    claimed: bool = True


class Committed(BaseModel):
    committed: bool


class Noted(BaseModel):
    noted: bool = True


class NextAttempt(BaseModel):
    job_id: str
    index: int
    attempt: int


class Next(BaseModel):
    ask_again: bool
    next: NextAttempt | None


# ---------------------------------------------------------------- operations

def _session(cp: ControlPlane, instance_id: str, _: Request) -> Session:
    found = assignments.assignment(cp, instance_id)
    ref = found.ref
    return Session(job_id=ref.job_id, index=ref.index, attempt=ref.attempt, instance_id=ref.instance_id,
                   kind=found.kind, spec=found.spec, credentials=found.credentials, rank=ref.rank)


def _claim(cp: ControlPlane, instance_id: str, request: AttemptRequest) -> Claimed:
    _recovered(assignments.claim_attempt(cp, instance_id, request.attempt))
    return Claimed()


def _checkpoint(cp: ControlPlane, instance_id: str, request: CommitRequest) -> Committed:
    committed = assignments.commit(
        cp, instance_id, request.attempt, request.seq, request.size_bytes, request.method, request.committed_at,
        predicted_final_seconds=request.predicted_final_seconds, final_fits_warning=request.final_fits_warning,
        capture_bytes_per_second=request.capture_bytes_per_second,
        upload_bytes_per_second=request.upload_bytes_per_second, final_budget_seconds=request.final_budget_seconds,
        ranks=request.ranks)
    if committed:
        metrics.add_metric(name="CheckpointMiB", unit=MetricUnit.Megabytes, value=request.size_bytes / 2**20)
        if request.seconds is not None:
            metrics.add_metric(name="CheckpointSeconds", unit=MetricUnit.Seconds, value=request.seconds)
    return Committed(committed=committed)


def _restored(cp: ControlPlane, instance_id: str, request: RestoredRequest) -> Noted:
    _recovered(assignments.restored(cp, instance_id, request.attempt, request.seq, request.from_attempt))
    if request.seconds is not None:
        metrics.add_metric(name="RestoreSeconds", unit=MetricUnit.Seconds, value=request.seconds)
    return Noted()


def _recovered(seconds: float | None) -> None:
    """From a spot interruption to the task running again on its replacement."""
    if seconds is not None:
        metrics.add_metric(name="RecoverySeconds", unit=MetricUnit.Seconds, value=seconds)


def _next(cp: ControlPlane, instance_id: str, request: AttemptRequest) -> Next:
    found = assignments.next_task(cp, instance_id, request.attempt)
    worker = found.worker
    return Next(ask_again=found.ask_again, next=None if worker is None else NextAttempt(
        job_id=worker.job_id, index=worker.index, attempt=worker.attempt))


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Operation(Generic[R]):
    request: type[R]
    answer: Callable[[ControlPlane, str, R], BaseModel]

    def __call__(self, cp: ControlPlane, instance_id: str, body: Any) -> BaseModel:
        return self.answer(cp, instance_id, self.request.model_validate(body))


OPERATIONS: dict[str, Operation[Any]] = {
    "session": Operation(Request, _session),
    "claim": Operation(AttemptRequest, _claim),
    "checkpoint": Operation(CommitRequest, _checkpoint),
    "restored": Operation(RestoredRequest, _restored),
    "next": Operation(AttemptRequest, _next),
}


# ---------------------------------------------------------------- refusals, in one place

class Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def _problems(error: ValidationError | SpecError) -> str:
    found = error.problems if isinstance(error, SpecError) else problems_of(
        error.errors(include_url=False, include_input=False))
    return "; ".join(f"{p['field']}: {p['problem']}" for p in found)


_REFUSALS: tuple[tuple[type[Exception], HTTPStatus, Callable[[Any], str]], ...] = (
    (Refused, HTTPStatus.FORBIDDEN, str),  # its own status (400, 403, 404, 405, 413)
    (assignments.NotServing, HTTPStatus.CONFLICT, str),
    (assignments.ClaimRefused, HTTPStatus.CONFLICT, lambda error: f"claim refused: {error}"),
    (ValidationError, HTTPStatus.BAD_REQUEST, _problems),
    (SpecError, HTTPStatus.BAD_REQUEST, _problems),  # a body that is no JSON document
)


def _refusal(error: Exception) -> tuple[HTTPStatus, str] | None:
    for kind, status, message in _REFUSALS:
        if isinstance(error, kind):
            return (error.status if isinstance(error, Refused) else status), message(error)
    return None


# ---------------------------------------------------------------- the handler

@instrumented
def handler(event: dict[str, Any], context: LambdaContext, control: ControlPlane | None = None) -> dict[str, Any]:
    cp = control or default_control_plane()
    try:
        instance_id = caller_instance(event, cp.settings.instance_role_name)
        answer = _operation(event)(cp, instance_id, _body(event))
    except Exception as error:
        refusal = _refusal(error)
        if refusal is None:
            raise
        status, message = refusal
        logger.info("worker request refused", extra={"status": int(status), "reason": message})
        return _json(status, ErrorBody(error=message).model_dump_json(exclude_none=True))
    return _json(HTTPStatus.OK, answer.model_dump_json())


def caller_instance(event: dict[str, Any], instance_role_name: str) -> str:
    """The instance a request was signed by: a session of the instance role named after the instance.

    A function URL with AuthType AWS_IAM names the signer in requestContext.authorizer.iam (payload 2.0)."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    identity = authorizer.get("iam") if isinstance(authorizer, dict) else None
    signer = identity.get("userArn") if isinstance(identity, dict) else None
    match = _ASSUMED_ROLE.match(signer if isinstance(signer, str) else "")
    if match is None or not instance_role_name or match["role"] != instance_role_name:
        raise Refused(HTTPStatus.FORBIDDEN, "the worker routes answer only to spotrun's worker instances")
    if not _INSTANCE_ID.match(match["session"]):
        raise Refused(HTTPStatus.FORBIDDEN, "the caller's session is not an instance's")
    return match["session"]


def _operation(event: dict[str, Any]) -> Operation[Any]:
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    if not isinstance(http, dict) or http.get("method") != "POST":
        raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "the worker routes take POST")
    path = str(event.get("rawPath") or "")
    name = path.removeprefix(ROUTES_PREFIX)
    if not path.startswith(ROUTES_PREFIX) or name not in OPERATIONS:
        raise Refused(HTTPStatus.NOT_FOUND, f"no worker operation {name[:40]!r}")
    return OPERATIONS[name]


def _body(event: dict[str, Any]) -> Any:
    raw = event.get("body") or "{}"
    if len(raw) > MAX_BODY_CHARS:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "worker requests are small JSON objects")
    if event.get("isBase64Encoded") and event.get("body"):
        # A function URL hands over base64-encoded a body whose content type it does not take for text.
        try:
            raw = base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, ValueError):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body is marked base64-encoded but is not base64 text") from None
    return load_document(raw)


def _json(status: HTTPStatus, body: str) -> dict[str, Any]:
    return {"statusCode": int(status), "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
            "body": body}
