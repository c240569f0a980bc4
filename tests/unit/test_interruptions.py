"""What each EventBridge event makes spotrun do: one pure function, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotrun.domain.interruptions import Action, Reaction, classify_event, move_time, reaction
from spotrun.domain.model import Task, TaskState
from tests.support import eventbridge_event


@pytest.mark.parametrize(("event", "action"), [
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1", "instance-action": "terminate"}),
     Action.REPLACE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1", "instance-action": "stop"}),
     Action.REPLACE),
    (eventbridge_event("EC2 Instance Rebalance Recommendation", {"instance-id": "i-1"}), Action.CHECKPOINT),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "terminated"}),
     Action.ATTEMPT_LOST),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "stopping"}),
     Action.ATTEMPT_LOST),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "shutting-down"}),
     Action.ATTEMPT_LOST),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "running"}),
     Action.IGNORE),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "pending"}),
     Action.IGNORE),
    (eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
        "startTime": "2026-11-25T10:00:00Z", "affectedEntities": [{"entityValue": "i-1"}, {"entityValue": "i-2"}],
    }, source="aws.health"), Action.MOVE),
    *((eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "statusCode": status,
        "startTime": "Wed, 25 Nov 2026 10:00:00 GMT", "affectedEntities": [{"entityValue": "i-1"}],
    }, source="aws.health"), action) for status, action in (("upcoming", Action.MOVE), ("open", Action.MOVE),
                                                           ("closed", Action.CANCEL_MOVE))),
    (eventbridge_event("AWS Health Event", {"service": "EC2", "eventTypeCategory": "issue"}, source="aws.health"),
     Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Request Fulfillment", {"instance-id": "i-1"}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"wrong": "shape"}), Action.IGNORE),
    # a time without a zone (EventBridge writes '...Z') is UTC, never a naive datetime
    ({**eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1"}),
      "time": "2026-11-23T10:00:00"}, Action.REPLACE),
    ({**eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "terminated"}),
      "time": "2026-11-23T10:00:00"}, Action.ATTEMPT_LOST),
    # instance ids are EC2's shape ('i-' and hex digits, at most 64 characters) or the event is ignored
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-" + "0" * 62}), Action.REPLACE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-" + "0" * 63}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-0ABC"}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-"}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "vol-0abc"}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": 7}), Action.IGNORE),
    (eventbridge_event("EC2 Instance Rebalance Recommendation", {"instance-id": "i-1\n"}), Action.IGNORE),
    (eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-" + "f" * 4096, "state": "terminated"}),
     Action.IGNORE),
    (eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange",
        "affectedEntities": [{"entityValue": "i-" + "0" * 100}, {"entityValue": "i-xyz"}, {"entityValue": ["i-1"]}],
    }, source="aws.health"), Action.IGNORE),
    (eventbridge_event("AWS Health Event", {"service": "EC2", "eventTypeCategory": "scheduledChange",
                                            "affectedEntities": "i-1"}, source="aws.health"), Action.IGNORE),
    ({"source": "aws.ec2"}, Action.IGNORE),
    ("a string", Action.IGNORE),
    (None, Action.IGNORE),
])
def test_each_event_kind_maps_to_one_action(event, action):
    assert classify_event(event).action == action


def test_a_health_event_names_every_affected_instance_and_when():
    event = classify_event(eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "startTime": "2026-11-25T10:00:00Z",
        "affectedEntities": [{"entityValue": "i-1"}, {"entityValue": "vol-9"}, {"entityValue": "i-2"}],
    }, source="aws.health"))
    assert event.instance_ids == ("i-1", "i-2")
    assert event.not_before is not None and event.not_before.isoformat() == "2026-11-25T10:00:00+00:00"


def test_a_warning_keeps_its_own_timestamp_for_latency_metrics():
    event = classify_event(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-9"}))
    assert event.at is not None and event.instance_ids == ("i-9",)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
    ("2026-11-23T10:00:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),  # no zone: UTC
    ("2026-11-23T11:00:00+01:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
    ("Mon, 23 Nov 2026 10:00:00 GMT", datetime(2026, 11, 23, 10, tzinfo=UTC)),  # AWS Health's startTime
    ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
    ("yesterday", None),
    (5, None),
    ("2026-11-23T10:00:00" + " " * 100, None),
])
def test_event_times_are_aware_and_in_utc(text, expected):
    for event in (
        eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1"}),
        eventbridge_event("EC2 Instance Rebalance Recommendation", {"instance-id": "i-1"}),
        eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "stopped"}),
    ):
        at = classify_event({**event, "time": text}).at
        assert at == expected and (at is None or at.utcoffset().total_seconds() == 0)
    health = classify_event(eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "startTime": text,
        "affectedEntities": [{"entityValue": "i-1"}]}, source="aws.health"))
    assert health.not_before == expected


def test_a_bad_instance_id_is_ignored_with_the_reason_why_and_quoted_short():
    event = classify_event(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-" + "z" * 5000}))
    assert event.action == Action.IGNORE and event.instance_ids == ()
    assert event.reason.startswith("not an instance id") and len(event.reason) < 120


def test_words_of_the_event_quoted_in_a_reason_are_short_and_printable():
    event = classify_event(eventbridge_event("EC2 Spot Instance Interruption Warning",
                                             {"instance-id": "i-1", "instance-action": "x\n" * 5000}))
    assert event.action == Action.REPLACE and len(event.reason) < 120 and "\n" not in event.reason
    health = classify_event(eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "C" * 5000,
        "affectedEntities": [{"entityValue": "i-1"}, {"entityValue": "i-1"}]}, source="aws.health"))
    assert health.instance_ids == ("i-1",) and len(health.reason) < 120


def _task(state: TaskState, attempt: int = 2) -> Task:
    return Task(job_id="j-00000000000000000001", index=0, state=state, attempt=attempt)


# The second half of the decision: what an event's action means for the task an instance serves. The
# instance serves attempt 2 in each row; the task is stored in the state shown, at the attempt shown.
@pytest.mark.parametrize(("action", "task", "reaction_"), [
    (Action.REPLACE, _task(TaskState.RUNNING), Reaction.REPLACE),
    (Action.REPLACE, _task(TaskState.LAUNCHING), Reaction.REPLACE),
    (Action.REPLACE, _task(TaskState.RUNNING, attempt=3), Reaction.IGNORE),  # already replaced
    (Action.REPLACE, _task(TaskState.QUEUED), Reaction.IGNORE),  # requeued meanwhile: nothing to replace
    (Action.REPLACE, _task(TaskState.SUCCEEDED), Reaction.IGNORE),
    (Action.CHECKPOINT, _task(TaskState.RUNNING), Reaction.REQUEST_CHECKPOINT),
    (Action.CHECKPOINT, _task(TaskState.LAUNCHING), Reaction.IGNORE),  # nothing to checkpoint before the claim
    (Action.CHECKPOINT, _task(TaskState.RUNNING, attempt=3), Reaction.IGNORE),
    (Action.ATTEMPT_LOST, _task(TaskState.RUNNING), Reaction.LOSE_ATTEMPT),
    (Action.ATTEMPT_LOST, _task(TaskState.LAUNCHING), Reaction.LOSE_ATTEMPT),
    (Action.ATTEMPT_LOST, _task(TaskState.RUNNING, attempt=3), Reaction.END_SUPERSEDED_ATTEMPT),  # drained
    (Action.ATTEMPT_LOST, _task(TaskState.QUEUED, attempt=3), Reaction.END_SUPERSEDED_ATTEMPT),
    (Action.ATTEMPT_LOST, _task(TaskState.SUSPENDED), Reaction.IGNORE),  # it ended with a report
    (Action.ATTEMPT_LOST, _task(TaskState.RUNNING, attempt=1), Reaction.IGNORE),  # a newer attempt than stored
    (Action.IGNORE, _task(TaskState.RUNNING), Reaction.IGNORE),
    (Action.MOVE, _task(TaskState.RUNNING), Reaction.MOVE),
    (Action.MOVE, _task(TaskState.LAUNCHING), Reaction.MOVE),
    (Action.MOVE, _task(TaskState.RUNNING, attempt=3), Reaction.IGNORE),  # the instance no longer serves it
    (Action.MOVE, _task(TaskState.SUCCEEDED), Reaction.IGNORE),
])
def test_only_the_attempt_that_owns_its_task_is_replaced_checkpointed_or_lost(action, task, reaction_):
    assert reaction(action, task, 2) == reaction_


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEAD = timedelta(minutes=30)


@pytest.mark.parametrize(("starts_at", "move_at"), [
    (NOW + timedelta(days=14), NOW + timedelta(days=14) - LEAD),  # not at once, two weeks early
    (NOW + timedelta(hours=1), NOW + timedelta(minutes=30)),
    (NOW + timedelta(minutes=10), NOW),  # within the lead: at once
    (NOW - timedelta(minutes=5), NOW),  # under way (open): at once, never after
    (None, NOW),  # no start known: at once
])
def test_a_task_moves_off_an_instance_its_lead_before_the_scheduled_change(starts_at, move_at):
    assert move_time(starts_at, NOW, LEAD) == move_at


def test_a_scheduled_change_says_what_and_when_and_a_closed_one_names_its_instances():
    event = classify_event(eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
        "statusCode": "upcoming", "startTime": "Wed, 25 Nov 2026 10:00:00 GMT",
        "affectedEntities": [{"entityValue": "i-1"}]}, source="aws.health"))
    assert event.not_before == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert event.reason == "scheduled change AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED at 2026-11-25 10:00 UTC"
    closed = classify_event(eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "statusCode": "closed",
        "affectedEntities": [{"entityValue": "i-1"}]}, source="aws.health"))
    assert (closed.action, closed.instance_ids) == (Action.CANCEL_MOVE, ("i-1",))


@pytest.mark.parametrize("field", ["source", "detail-type"])
@pytest.mark.parametrize("value", [["aws.ec2"], {"a": 1}, 7, None])
def test_an_event_whose_source_or_type_is_not_text_is_ignored(field, value):
    """Found by fuzzing the interruption consumer: a list there raised TypeError (unhashable) and the
    record went to the dead-letter queue."""
    event = {**eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1"}), field: value}
    assert classify_event(event).action == Action.IGNORE
