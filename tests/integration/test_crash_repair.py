"""A control plane invocation that dies between two of its writes leaves a state that the next
delivery of the same message, or the reaper's sweep, repairs (found by the chaos soak)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from spotrun.attempts import claim
from spotrun.domain.model import JobState, TaskState
from spotrun.reaping import sweep
from tests.integration.test_task_flow import JOB, Loop, completion, ref


class Crash(Exception):
    pass


def crash_after(client: Any, operation: str, times: int = 1) -> dict[str, int]:
    """The next `times` successful calls of `operation` are followed by a crash of the caller."""
    left = {"n": times}

    def hook(http_response: Any = None, **_: Any) -> None:
        if left["n"] > 0 and http_response is not None and http_response.status_code < 300:
            left["n"] -= 1
            raise Crash(f"crashed after {operation}")

    client.meta.events.register(f"after-call.dynamodb.{operation}", hook)
    return left


def two_tasks_running(loop: Loop, clock: Any) -> tuple[str, list[Any]]:
    spec = {**JOB, "tasks": 2, "combine": {"command": ["python", "merge.py"]}}
    status, accepted = loop.api("POST", "/jobs", spec)
    assert status == 202, accepted
    job_id = accepted["job_id"]
    loop.drain()
    tasks = [loop.task(job_id, i) for i in range(2)]
    for task in tasks:
        claim(loop.cp, ref(task))
    clock.advance(30)
    return job_id, [loop.task(job_id, i) for i in range(2)]


def test_a_finisher_that_died_after_the_last_task_succeeded_releases_the_combine_on_redelivery(
        cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id, (first, second) = two_tasks_running(loop, clock)
    loop.send("reports", completion(first, clock()))
    loop.drain()
    assert loop.task(job_id, 2).state == TaskState.WAITING

    # The finisher writes "task 1 SUCCEEDED" and dies before it queues the combine task
    crash_after(cp.store.client, "TransactWriteItems")
    body = completion(second, clock())
    loop.send("reports", body)
    with pytest.raises(BatchProcessingError):  # the whole batch failed: SQS will deliver it again
        loop.drain()
    assert loop.task(job_id, 1).state == TaskState.SUCCEEDED
    assert loop.task(job_id, 2).state == TaskState.WAITING  # the crash left the combine behind

    # SQS delivers the report again: the finisher finds its own change done and finishes the follow-ups
    loop.send("reports", body)
    loop.drain()
    assert loop.task(job_id, 2).state in (TaskState.QUEUED, TaskState.LAUNCHING)
    kinds = [e.kind for e in cp.store.timeline(job_id, 100)]
    assert kinds.count("TaskSucceeded") == 2 and kinds.count("CombineQueued") == 1


def test_the_reaper_releases_a_combine_whose_release_was_lost(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id, (first, second) = two_tasks_running(loop, clock)
    loop.send("reports", completion(first, clock()))
    loop.drain()
    crash_after(cp.store.client, "TransactWriteItems")
    loop.send("reports", completion(second, clock()))
    with pytest.raises(BatchProcessingError):
        loop.drain()
    assert loop.task(job_id, 2).state == TaskState.WAITING
    assert cp.store.get_job(job_id).state == JobState.RUNNING

    # The report is never delivered again (e.g. it went to the dead-letter queue): the sweep repairs it
    sweep(cp)
    assert loop.task(job_id, 2).state in (TaskState.QUEUED, TaskState.LAUNCHING)


# Defect found by the soak (seed 6): an attempt whose record was never written (crash between the admission
# and a separate put_attempts) got a partial record from the reaper's end-of-attempt update, which
# DynamoStore.attempts() could not read (KeyError 'job_id'). The record now comes with the admission.
def test_an_attempt_lost_before_its_record_was_written_leaves_readable_attempt_records(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    status, accepted = loop.api("POST", "/jobs", JOB)
    assert status == 202
    job_id = accepted["job_id"]
    # The scheduler admits the task (TaskLaunching) and dies before it writes the attempt record
    crash_after(cp.store.client, "TransactWriteItems")
    with pytest.raises(BatchProcessingError):
        loop.drain()
    assert loop.task(job_id).state == TaskState.LAUNCHING and [a.number for a in cp.store.attempts(job_id, 0)] == [1]

    # The launch never completes; the reaper ends the attempt and requeues the task
    clock.advance(cp.settings.launch_stale_seconds + 1)
    sweep(cp)
    assert loop.task(job_id).attempt >= 1
    numbers = [a.number for a in cp.store.attempts(job_id, 0)]
    assert 1 in numbers
