"""Attempts' logs in CloudWatch Logs (moto's), read through the API; "checkpoint now"; and who asked
for each action, on the timeline."""

from __future__ import annotations

import time
from typing import Any

import pytest

from spotrun import jobs
from spotrun.access import log_stream
from tests.integration.test_worker_routes import call as worker_call
from tests.integration.test_worker_routes import launched

ALICE = "arn:aws:iam::123456789012:user/alice"


def running(cp: Any, env: dict[str, str], aws: Any, context: Any, tasks: int = 1) -> tuple[Any, str]:
    loop, job_id = launched(cp, env, aws, context, tasks=tasks)
    for index in range(tasks):
        task = cp.store.get_task(job_id, index)
        status, answer = worker_call(cp, context, "claim", {"attempt": task.attempt}, task.instance_id)
        assert status == 200, answer
    return loop, job_id


def put_lines(aws: Any, env: dict[str, str], job_id: str, index: int, attempt: int, lines: list[str],
              start_ms: int | None = None) -> None:
    start_ms = start_ms or int(time.time() * 1000) - 60_000  # the log group's retention keeps recent events only
    aws.client("logs", region_name="us-east-1").put_log_events(
        logGroupName=env["SPOTRUN_TASK_LOG_GROUP"], logStreamName=log_stream(job_id, index, attempt),
        logEvents=[{"timestamp": start_ms + n, "message": line} for n, line in enumerate(lines)])


def test_the_claim_opens_the_attempts_log_stream_and_the_api_reads_it_from_the_start_and_on(cp, env, aws, context):
    loop, job_id = running(cp, env, aws, context)
    task = cp.store.get_task(job_id, 0)
    streams = aws.client("logs", region_name="us-east-1").describe_log_streams(
        logGroupName=env["SPOTRUN_TASK_LOG_GROUP"])["logStreams"]
    assert [s["logStreamName"] for s in streams] == [f"{job_id}/0/{task.attempt}"]

    put_lines(aws, env, job_id, 0, task.attempt, ["one", "two"])
    status, page = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs")
    assert status == 200, page
    assert [e["message"] for e in page["events"]] == ["one", "two"]
    assert page["attempt"] == task.attempt and page["kept"] is True and page["next_token"]

    put_lines(aws, env, job_id, 0, task.attempt, ["three"], start_ms=int(time.time() * 1000) - 30_000)
    status, after = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs", next_token=page["next_token"])
    assert status == 200 and [e["message"] for e in after["events"]] == ["three"]
    status, again = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs", next_token=after["next_token"])
    assert status == 200 and again["events"] == []  # following: nothing new yet

    status, newest = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs", newest="true", limit="2")
    assert status == 200 and [e["message"] for e in newest["events"]] == ["two", "three"]


def test_a_task_that_never_ran_has_an_empty_log_and_an_attempt_it_never_had_is_a_404(cp, env, aws, context):
    loop, job_id = launched(cp, env, aws, context, tasks=1)
    status, page = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs")  # launched, not claimed: no stream yet
    assert status == 200 and page["events"] == []
    status, answer = loop.api("GET", f"/jobs/{job_id}/tasks/0/logs", attempt="9")
    assert status == 404 and "no attempt 9" in answer["error"]


def test_checkpoint_now_asks_running_tasks_and_says_who_asked(cp, env, aws, context):
    loop, job_id = running(cp, env, aws, context, tasks=2)
    status, answer = loop.api("POST", f"/jobs/{job_id}/checkpoint")
    assert status == 202 and answer == {"job_id": job_id, "tasks": [0, 1]}
    assert all(cp.store.get_task(job_id, i).checkpoint_requested_at is not None for i in (0, 1))
    status, answer = loop.api("POST", f"/jobs/{job_id}/tasks/1/checkpoint")
    assert status == 202 and answer["tasks"] == [1]
    requested = [e for e in cp.store.timeline(job_id, 100) if e.kind == "CheckpointRequested"]
    assert [e.detail["by"] for e in requested] == [ALICE, ALICE]
    assert requested[-1].index == 1


def test_checkpoint_now_is_a_409_saying_why_when_nothing_runs(cp, env, aws, context):
    loop, job_id = launched(cp, env, aws, context, tasks=1)  # launching, not running yet
    status, answer = loop.api("POST", f"/jobs/{job_id}/checkpoint")
    assert status == 409 and "only a running task can checkpoint" in answer["error"]
    status, answer = loop.api("POST", f"/jobs/{job_id}/tasks/0/checkpoint")
    assert status == 409 and "task 0 is LAUNCHING" in answer["error"]
    job, _ = jobs.submit_job(cp, {"name": "plain", "command": "x", "checkpoint": {"method": "none"}})
    with pytest.raises(jobs.Conflict, match="checkpoint method none"):
        jobs.request_checkpoint(cp, job.job_id)


def test_the_timeline_says_who_asked_for_each_action(cp, env, aws, context):
    loop, job_id = running(cp, env, aws, context, tasks=2)
    assert loop.api("POST", f"/jobs/{job_id}/tasks/1/cancel")[0] == 202
    assert loop.api("POST", f"/jobs/{job_id}/suspend")[0] == 202
    events = {e.kind: e for e in cp.store.timeline(job_id, 100)}
    assert events["JobSubmitted"].detail["by"] == ALICE
    assert events["TaskCancelRequested"].detail == {"by": ALICE} and events["TaskCancelRequested"].index == 1
    assert events["JobSuspendRequested"].detail == {"by": ALICE}
