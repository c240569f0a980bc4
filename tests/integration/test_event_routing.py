"""The stack's EventBridge rules (spotrun.resources, made in moto by spotrun.provision) route to the
interruptions queue what its handler acts on, and not the instance states it would only ignore."""

from __future__ import annotations

import json
from typing import Any


def test_only_states_that_end_an_instance_and_spot_signals_reach_the_interruptions_queue(aws: Any, env: Any) -> None:
    events, sqs = aws.client("events", region_name="us-east-1"), aws.client("sqs", region_name="us-east-1")
    url = json.loads(env["SPOTRUN_QUEUE_URLS"])["interruptions"]
    sent = [("EC2 Instance State-change Notification", {"instance-id": "i-1", "state": state})
            for state in ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")]
    sent += [("EC2 Spot Instance Interruption Warning", {"instance-id": "i-1", "instance-action": "terminate"}),
             ("EC2 Instance Rebalance Recommendation", {"instance-id": "i-1"})]
    for detail_type, detail in sent:
        events.put_events(Entries=[{"Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail)}])
    delivered = []
    for _ in range(10):
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        if not answer.get("Messages"):
            break
        delivered += [json.loads(m["Body"]) for m in answer["Messages"]]
    states = sorted(e["detail"]["state"] for e in delivered if e["detail-type"] == "EC2 Instance State-change Notification")
    assert states == ["shutting-down", "stopping"]  # terminated and stopped follow them: no news
    assert sorted(e["detail-type"] for e in delivered if "state" not in e["detail"]) == [
        "EC2 Instance Rebalance Recommendation", "EC2 Spot Instance Interruption Warning"]
