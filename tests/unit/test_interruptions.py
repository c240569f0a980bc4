"""What each EventBridge event makes spotrun do: one pure function, as a table."""

from __future__ import annotations

import pytest

from spotrun.domain.interruptions import Action, classify_event
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
    }, source="aws.health"), Action.REPLACE),
    (eventbridge_event("AWS Health Event", {"service": "EC2", "eventTypeCategory": "issue"}, source="aws.health"),
     Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Request Fulfillment", {"instance-id": "i-1"}), Action.IGNORE),
    (eventbridge_event("EC2 Spot Instance Interruption Warning", {"wrong": "shape"}), Action.IGNORE),
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
