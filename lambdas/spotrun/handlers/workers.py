"""The worker routes (`POST /worker/<operation>`, IAM-authorised): the only control-plane calls an
instance's own role may make. The caller's instance is read from its signed identity (the session
name of an instance-profile session is the instance id), never from the request body.

    session     the attempt this instance serves, its job spec, and task-role credentials (renewal too)
    claim       LAUNCHING -> RUNNING for that attempt
    checkpoint  move the task's pointer to a checkpoint uploaded under its own prefix
    restored    note on the timeline that the attempt restored a checkpoint
    next        instance reuse: the job's next queued task for this instance
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spotrun import workers
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.messages import MAX_ATTEMPT
from spotrun.handlers.common import instrumented, logger, problems

# arn:aws:sts::<account>:assumed-role/<role name>/<session name>
_ASSUMED_ROLE = re.compile(r"^arn:aws[\w-]*:sts::\d{12}:assumed-role/(?P<role>[\w+=,.@-]{1,64})/(?P<session>[\w+=,.@-]{2,64})$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Attempt(_Request):
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)


class _Commit(_Attempt):
    seq: int = Field(ge=1, le=10**8 - 1)
    size_bytes: int = Field(ge=0, le=2**53)
    method: str = Field(pattern=r"^[a-z]{1,16}$")
    committed_at: datetime


class _Restored(_Attempt):
    seq: int = Field(ge=1, le=10**8 - 1)
    from_attempt: int = Field(ge=1, le=MAX_ATTEMPT)


class Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> dict[str, Any]:
    cp = control or default_control_plane()
    try:
        instance_id = caller_instance(event, cp.settings.instance_role_name)
        operation = (event.get("path") or "").removeprefix("/worker/")
        if event.get("httpMethod") != "POST":
            raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "the worker routes take POST")
        body = _body(event)
        answer = _dispatch(cp, operation, instance_id, body)
    except Refused as refused:
        logger.info("worker request refused", extra={"status": int(refused.status), "reason": str(refused)})
        return _json(refused.status, {"error": str(refused)})
    except workers.NotServing as problem:
        return _json(HTTPStatus.CONFLICT, {"error": str(problem)})
    except workers.ClaimRefused as refused:
        return _json(HTTPStatus.CONFLICT, {"error": f"claim refused: {refused}"})
    except ValidationError as error:
        return _json(HTTPStatus.BAD_REQUEST, {"error": problems(error)})
    return _json(HTTPStatus.OK, answer)


def caller_instance(event: dict[str, Any], instance_role_name: str) -> str:
    """The instance a request was signed by: a session of the instance role named after the instance."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    match = _ASSUMED_ROLE.match(str(identity.get("userArn") or ""))
    if match is None or not instance_role_name or match["role"] != instance_role_name:
        raise Refused(HTTPStatus.FORBIDDEN, "the worker routes answer only to spotrun's worker instances")
    if not _INSTANCE_ID.match(match["session"]):
        raise Refused(HTTPStatus.FORBIDDEN, "the caller's session is not an instance's")
    return match["session"]


def _body(event: dict[str, Any]) -> dict[str, Any]:
    raw = event.get("body") or "{}"
    if len(raw) > 4096:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "worker requests are small JSON objects")
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return body


def _dispatch(cp: ControlPlane, operation: str, instance_id: str, body: dict[str, Any]) -> dict[str, Any]:
    match operation:
        case "session":
            _Request.model_validate(body)
            return workers.assignment(cp, instance_id).view()
        case "claim":
            workers.claim_attempt(cp, instance_id, _Attempt.model_validate(body).attempt)
            return {"claimed": True}
        case "checkpoint":
            commit = _Commit.model_validate(body)
            return {"committed": workers.commit(cp, instance_id, commit.attempt, commit.seq, commit.size_bytes,
                                                commit.method, commit.committed_at)}
        case "restored":
            note = _Restored.model_validate(body)
            workers.restored(cp, instance_id, note.attempt, note.seq, note.from_attempt)
            return {"noted": True}
        case "next":
            found = workers.next_task(cp, instance_id, _Attempt.model_validate(body).attempt)
            return {"ask_again": found.ask_again,
                    "next": None if found.worker is None else {"job_id": found.worker.job_id, "index": found.worker.index,
                                                               "attempt": found.worker.attempt}}
    raise Refused(HTTPStatus.NOT_FOUND, f"no worker operation {operation[:40]!r}")


def _json(status: HTTPStatus, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": int(status), "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
            "body": json.dumps(body, default=str)}
