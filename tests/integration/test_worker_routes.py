"""The worker routes: an instance's own role gets its attempt, task credentials and the writes outside
its task's items, and nothing for another instance's attempt. The caller is read from the signed
identity (the function URL's requestContext.authorizer.iam.userArn, payload 2.0), never from the body."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from spotrun.domain.messages import CompletionReport, ProgramResult
from spotrun.domain.model import TaskState
from spotrun.handlers import finisher, worker_api
from spotrun.resources import EnvVar
from tests.integration.test_task_flow import JOB, Loop
from tests.support import function_url_event

INSTANCE_ROLE = "spotrun-instance"


def call(cp: Any, context: Any, operation: str, body: dict[str, Any], instance_id: str,
         role: str = INSTANCE_ROLE) -> tuple[int, dict[str, Any]]:
    event = function_url_event("POST", f"/worker/{operation}", body,
                               signer=f"arn:aws:sts::123456789012:assumed-role/{role}/{instance_id}")
    answer = worker_api.handler(event, context, control=cp)
    return answer["statusCode"], json.loads(answer["body"])


def launched(cp: Any, env: dict[str, str], aws: Any, context: Any, tasks: int = 1) -> tuple[Loop, str]:
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": tasks})
    loop.drain()
    return loop, accepted["job_id"]


def test_an_instance_gets_its_own_attempt_with_task_credentials(cp, env, aws, context):
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    status, answer = call(cp, context, "session", {}, task.instance_id)
    assert status == 200
    assert (answer["job_id"], answer["index"], answer["attempt"], answer["kind"]) == (job_id, 0, task.attempt, "task")
    assert answer["spec"]["command"] == JOB["command"]
    assert set(answer["credentials"]) == {"access_key_id", "secret_access_key", "session_token", "expiration"}


def test_only_sessions_of_the_instance_role_named_after_an_instance_are_served(cp, env, aws, context):
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    status, answer = call(cp, context, "session", {}, task.instance_id, role="SomeAdminRole")
    assert status == 403 and "worker instances" in answer["error"]
    status, _ = call(cp, context, "session", {}, "not-an-instance")
    assert status == 403
    status, answer = call(cp, context, "session", {}, "i-0123456789abcdef0")  # an instance spotrun never bound
    assert status == 409 and "no attempt names instance" in answer["error"]


def test_an_unsigned_or_rest_shaped_request_names_no_caller_and_is_refused(cp, env, aws, context):
    """Only Lambda's authorizer.iam names the caller: no signer, or an identity where API Gateway REST put it
    (requestContext.identity) or in the body, is no instance."""
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    own = f"arn:aws:sts::123456789012:assumed-role/{INSTANCE_ROLE}/{task.instance_id}"
    unsigned = function_url_event("POST", "/worker/claim", {"attempt": task.attempt})
    rest_shaped = function_url_event("POST", "/worker/claim", {"attempt": task.attempt})
    rest_shaped["requestContext"]["identity"] = {"userArn": own}
    in_body = function_url_event("POST", "/worker/claim", {"attempt": task.attempt, "userArn": own})
    for event in (unsigned, rest_shaped, in_body):
        answer = worker_api.handler(event, context, control=cp)
        assert answer["statusCode"] == 403, answer
    assert cp.store.get_task(job_id, 0).state == TaskState.LAUNCHING


def test_only_post_to_a_worker_operation_path_is_answered(cp, env, aws, context):
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    signer = f"arn:aws:sts::123456789012:assumed-role/{INSTANCE_ROLE}/{task.instance_id}"
    for method, path, status in (("GET", "/worker/session", 405), ("POST", "/session", 404),
                                 ("POST", "/other/session", 404), ("POST", "/worker/session/x", 404),
                                 ("POST", "/worker/session", 200)):
        answer = worker_api.handler(function_url_event(method, path, {}, signer=signer), context, control=cp)
        assert answer["statusCode"] == status, (method, path, answer)
        assert answer["headers"]["Content-Type"] == "application/json"


def test_an_instance_claims_and_commits_only_for_the_attempt_it_serves(cp, env, aws, context, clock):
    _, job_id = launched(cp, env, aws, context, tasks=2)
    first, second = cp.store.get_task(job_id, 0), cp.store.get_task(job_id, 1)
    # Naming another attempt in the body gets nothing: the attempt comes from the caller's instance.
    status, _ = call(cp, context, "claim", {"attempt": first.attempt + 1}, first.instance_id)
    assert status == 409 and cp.store.get_task(job_id, 0).state == TaskState.LAUNCHING
    assert call(cp, context, "claim", {"attempt": first.attempt}, first.instance_id)[0] == 200
    assert cp.store.get_task(job_id, 0).state == TaskState.RUNNING
    assert cp.store.get_task(job_id, 1).state == TaskState.LAUNCHING  # the other task is untouched

    commit = {"attempt": first.attempt, "seq": 1, "size_bytes": 10, "method": "signal",
              "committed_at": clock().isoformat()}
    status, answer = call(cp, context, "checkpoint", commit, first.instance_id)
    assert status == 200 and answer == {"committed": True}
    pointer = cp.store.get_task(job_id, 0).checkpoint
    assert pointer.key == f"checkpoints/{job_id}/0/00000001" and pointer.attempt == first.attempt
    # The second task's instance cannot move the first task's pointer: the body names no task, and the
    # attempt it names must be the one its instance serves.
    status, _ = call(cp, context, "checkpoint", {**commit, "attempt": second.attempt + 1}, second.instance_id)
    assert status == 409
    call(cp, context, "checkpoint", {**commit, "attempt": second.attempt, "seq": 2}, second.instance_id)
    assert cp.store.get_task(job_id, 0).checkpoint.seq == 1
    other = cp.store.get_task(job_id, 1).checkpoint
    assert other is None or other.key == f"checkpoints/{job_id}/1/00000002"


def test_bad_worker_requests_are_refused_with_a_reason(cp, env, aws, context):
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    status, answer = call(cp, context, "claim", {"attempt": task.attempt, "job_id": "j-other"}, task.instance_id)
    assert status == 400 and "job_id" in answer["error"]
    status, answer = call(cp, context, "format-disk", {}, task.instance_id)
    assert status == 404
    assert cp.store.get_task(job_id, 0).state == TaskState.LAUNCHING


def test_a_finished_instance_is_asked_to_wait_then_gets_the_next_queued_task(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 3, "max_concurrency": 1})
    job_id = accepted["job_id"]
    loop.drain()
    running = next(t for t in (cp.store.get_task(job_id, i) for i in range(3)) if t.state == TaskState.LAUNCHING)
    assert call(cp, context, "claim", {"attempt": running.attempt}, running.instance_id)[0] == 200
    status, answer = call(cp, context, "next", {"attempt": running.attempt}, running.instance_id)
    assert status == 200 and answer == {"ask_again": True, "next": None}  # its report is not in yet
    loop.send("reports", CompletionReport(
        job_id=job_id, index=running.index, attempt=running.attempt, instance_id=running.instance_id,
        sent_at=clock(), outcome="completed", program=ProgramResult(exit_code=0), keep_instance=True,
    ).model_dump_json())
    loop.drain()
    status, answer = call(cp, context, "next", {"attempt": running.attempt}, running.instance_id)
    assert status == 200 and answer["next"] is not None and answer["next"]["index"] != running.index
    status, session = call(cp, context, "session", {}, running.instance_id)
    assert (session["index"], session["attempt"]) == (answer["next"]["index"], answer["next"]["attempt"])


def _sqs_event(body: str, sender: str) -> dict[str, Any]:
    return {"Records": [{
        "messageId": "m-1", "receiptHandle": "r", "body": body, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:spotrun-x", "awsRegion": "us-east-1",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": sender,
                       "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {},
    }]}


def test_messages_count_only_when_sent_by_the_session_of_the_attempt_they_name(cp, env, aws, context, clock,
                                                                               monkeypatch):
    _, job_id = launched(cp, env, aws, context, tasks=2)
    first, second = cp.store.get_task(job_id, 0), cp.store.get_task(job_id, 1)
    for task in (first, second):
        assert call(cp, context, "claim", {"attempt": task.attempt}, task.instance_id)[0] == 200
    monkeypatch.setenv(EnvVar.TASK_ROLE_ID, "AROATASKROLE")
    own = f"AROATASKROLE:{job_id}.1.{second.attempt}"
    # The second task's worker reports the first task as failed: dropped, not applied, not retried.
    forged = CompletionReport(job_id=job_id, index=0, attempt=first.attempt, instance_id=first.instance_id,
                              sent_at=clock(), outcome="completed", program=ProgramResult(exit_code=1))
    answer = finisher.handler(_sqs_event(forged.model_dump_json(), own), context, control=cp)
    assert answer == {"batchItemFailures": []}
    assert cp.store.get_task(job_id, 0).state == TaskState.RUNNING
    # (Heartbeats are no messages: the agent writes its own task's beat, confined by the task policy;
    # tests/local/test_iam_guard.py shows a session cannot write another task's.)


def test_a_base64_encoded_body_is_decoded_and_bad_base64_is_a_400(cp, env, aws, context):
    """A function URL hands a body over base64-encoded (isBase64Encoded) when its content type is not text."""
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)

    def claim(body: str) -> tuple[int, dict[str, Any]]:
        event = function_url_event("POST", "/worker/claim", body, base64_encoded=True,
                                   signer=f"arn:aws:sts::123456789012:assumed-role/{INSTANCE_ROLE}/{task.instance_id}")
        answer = worker_api.handler(event, context, control=cp)
        return answer["statusCode"], json.loads(answer["body"])

    status, answer = claim("not base64 at all!")
    assert status == 400 and "base64" in answer["error"]
    assert cp.store.get_task(job_id, 0).state == TaskState.LAUNCHING
    status, answer = claim(base64.b64encode(json.dumps({"attempt": task.attempt}).encode()).decode())
    assert (status, answer) == (200, {"claimed": True})
    assert cp.store.get_task(job_id, 0).state == TaskState.RUNNING


def test_a_commit_carries_the_agents_final_checkpoint_prediction_and_rates(cp, env, aws, context, clock):
    _, job_id = launched(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    assert call(cp, context, "claim", {"attempt": task.attempt}, task.instance_id)[0] == 200
    measured = {"predicted_final_seconds": 140.2, "final_fits_warning": False, "capture_bytes_per_second": 3.3e8,
                "upload_bytes_per_second": 6.1e7, "final_budget_seconds": 105.0}
    commit = {"attempt": task.attempt, "seq": 1, "size_bytes": 8 << 30, "method": "dmtcp",
              "committed_at": clock().isoformat(), **measured}
    assert call(cp, context, "checkpoint", commit, task.instance_id) == (200, {"committed": True})
    pointer = cp.store.get_task(job_id, 0).checkpoint
    assert {name: getattr(pointer, name) for name in measured} == measured
    assert pointer.final_note == "final checkpoint fits warning: no, predicted 140 s"
    stats = cp.store.pool_stats([task.pool])[task.pool]
    assert stats.upload_bytes == 8 << 30 and stats.upload_seconds == pytest.approx((8 << 30) / 6.1e7)
    # a negative rate or a prediction that is not a number is refused, naming the field
    status, answer = call(cp, context, "checkpoint", {**commit, "seq": 2, "upload_bytes_per_second": -1},
                          task.instance_id)
    assert status == 400 and "upload_bytes_per_second" in answer["error"]
