"""AWS Health scheduled changes (an instance retirement, a maintenance reboot), shaped as AWS Health
delivers them through EventBridge: an open or upcoming change moves the task, with a final checkpoint,
`scheduled_move_lead_seconds` before the change starts (at once when that is already past), never two
weeks early and never after; a closed one changes nothing (and cancels a move still pending)."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from spotrun.attempts import claim
from spotrun.domain.model import TaskState
from spotrun.reaping import sweep
from tests.integration.test_task_flow import JOB, Loop, ref
from tests.support import eventbridge_event


def health_event(instance_id: str, starts: datetime, status: str = "upcoming",
                 code: str = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED") -> dict[str, Any]:
    """AWS Health's documented shape (startTime as an HTTP date, the instance among affectedEntities)."""
    return eventbridge_event("AWS Health Event", {
        "eventArn": f"arn:aws:health:us-east-1::event/EC2/{code}/{code}_ABC123-DEF456",
        "service": "EC2", "eventTypeCode": code, "eventTypeCategory": "scheduledChange",
        "eventScopeCode": "ACCOUNT_SPECIFIC", "communicationId": "1234abc01232a4012345678-1",
        "startTime": format_datetime(starts, usegmt=True), "endTime": format_datetime(starts + timedelta(hours=1),
                                                                                       usegmt=True),
        "lastUpdatedTime": format_datetime(starts - timedelta(days=14), usegmt=True), "statusCode": status,
        "eventRegion": "us-east-1",
        "eventDescription": [{"language": "en_US", "latestDescription": "EC2 has detected degradation of the "
                                                                          "underlying hardware hosting your instance."}],
        "affectedEntities": [{"entityValue": instance_id, "tags": {}}],
    }, source="aws.health")


def beating(loop: Loop, job_id: str) -> None:
    """The attempt's agent heartbeats (the reaper would otherwise find it silent after the clock's leaps)."""
    task = loop.task(job_id)
    loop.cp.store.record_beat(job_id, 0, task.attempt, loop.cp.clock())


def running(loop: Loop) -> tuple[str, Any]:
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    job_id = accepted["job_id"]
    claim(loop.cp, ref(loop.task(job_id)))
    return job_id, loop.task(job_id)


def test_an_upcoming_change_two_weeks_ahead_moves_the_task_just_before_it_starts(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id, task = running(loop)
    starts = clock() + timedelta(days=14)
    loop.send("interruptions", health_event(task.instance_id, starts))
    loop.drain()
    # not at once, two weeks early: the task runs on, and the timeline says when it will move
    assert (loop.task(job_id).state, loop.task(job_id).attempt) == (TaskState.RUNNING, 1)
    scheduled = [e for e in cp.store.timeline(job_id, 100) if e.kind == "MoveScheduled"]
    lead = timedelta(seconds=cp.settings.scheduled_move_lead_seconds)
    assert len(scheduled) == 1 and scheduled[0].detail["move_at"] == (starts - lead).isoformat()
    loop.send("interruptions", health_event(task.instance_id, starts))  # delivered again: still one move
    loop.drain()
    clock.advance((14 * 24 * 3600) - lead.total_seconds() - 120)
    beating(loop, job_id)
    sweep(cp)
    assert loop.task(job_id).attempt == 1  # two minutes before its time: not yet
    clock.advance(121)
    beating(loop, job_id)
    sweep(cp)
    moved = loop.task(job_id)
    assert (moved.state, moved.attempt, moved.draining_attempt) == (TaskState.LAUNCHING, 2, 1)  # before the change
    assert clock() < starts and moved.environment_failures == 0
    assert "scheduled change AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED" in next(
        e for e in cp.store.timeline(job_id, 100) if e.kind == "TaskInterrupted").detail["reason"]
    clock.advance(60)
    sweep(cp)
    assert loop.task(job_id).attempt == 2  # moved once


@pytest.mark.parametrize("starts_in", [timedelta(minutes=5), timedelta(minutes=-30)], ids=["soon", "under way"])
def test_a_change_that_starts_within_the_lead_or_has_started_moves_the_task_at_once(cp, env, aws, context, clock,
                                                                                   starts_in):
    loop = Loop(cp, env, aws, context)
    job_id, task = running(loop)
    loop.send("interruptions", health_event(task.instance_id, clock() + starts_in,
                                            "open" if starts_in < timedelta(0) else "upcoming"))
    loop.drain()
    assert (loop.task(job_id).state, loop.task(job_id).attempt) == (TaskState.LAUNCHING, 2)


def test_a_closed_change_changes_nothing_and_cancels_the_pending_move(cp, env, aws, context, clock):
    """A closed scheduled change used to replace a running attempt."""
    loop = Loop(cp, env, aws, context)
    job_id, task = running(loop)
    loop.send("interruptions", health_event(task.instance_id, clock() - timedelta(days=1), "closed"))
    loop.drain()
    assert (loop.task(job_id).state, loop.task(job_id).attempt) == (TaskState.RUNNING, 1)
    starts = clock() + timedelta(days=2)
    loop.send("interruptions", health_event(task.instance_id, starts))
    loop.drain()
    loop.send("interruptions", health_event(task.instance_id, starts, "closed"))  # AWS cancelled it
    loop.drain()
    clock.advance(2 * 24 * 3600)
    beating(loop, job_id)
    sweep(cp)
    assert (loop.task(job_id).state, loop.task(job_id).attempt) == (TaskState.RUNNING, 1)


def test_a_move_due_for_an_instance_whose_task_moved_on_does_nothing(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id, task = running(loop)
    loop.send("interruptions", health_event(task.instance_id, clock() + timedelta(days=1)))
    loop.drain()
    loop.send("reports", __import__("tests.integration.test_task_flow", fromlist=["completion"]).completion(
        loop.task(job_id), clock()))
    loop.drain()
    assert loop.task(job_id).state == TaskState.SUCCEEDED
    clock.advance(24 * 3600)
    sweep(cp)
    assert (loop.task(job_id).state, loop.task(job_id).attempt) == (TaskState.SUCCEEDED, 1)
