"""SNS: control messages for the scheduler and notifications users subscribe to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from spotrun.domain.messages import ControlMessage
from spotrun.domain.model import TimelineEvent
from spotrun.resources import MESSAGE_TYPE_ATTRIBUTE


class PublishError(RuntimeError):
    """Some entries of a batch publish failed; they are named so the caller can retry them."""


class SnsBus:
    """Takes a boto3 SNS client and the two topic ARNs."""

    def __init__(self, client: Any, control_topic_arn: str, notify_topic_arn: str):
        self.client = client
        self.control_topic_arn = control_topic_arn
        self.notify_topic_arn = notify_topic_arn

    def send(self, message: ControlMessage) -> None:
        self.client.publish(
            TopicArn=self.control_topic_arn, Message=message.model_dump_json(),
            MessageAttributes={MESSAGE_TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": message.type}},
        )

    def notify(self, events: Sequence[TimelineEvent]) -> None:
        """Publish timeline events to the user topic (filterable on job_id and event type)."""
        for start in range(0, len(events), 10):
            batch = events[start:start + 10]
            entries = [
                {
                    "Id": str(position),
                    "Subject": f"spotrun {event.kind}"[:100],
                    "Message": json.dumps({
                        "job_id": event.job_id, "event": event.kind, "task": event.index, "attempt": event.attempt,
                        "at": event.at.isoformat(), "detail": event.detail,
                    }, default=str),
                    "MessageAttributes": {
                        "job_id": {"DataType": "String", "StringValue": event.job_id},
                        "event": {"DataType": "String", "StringValue": event.kind},
                    },
                }
                for position, event in enumerate(batch)
            ]
            answer = self.client.publish_batch(TopicArn=self.notify_topic_arn, PublishBatchRequestEntries=entries)
            failed = answer.get("Failed") or []
            if failed:
                raise PublishError(f"{len(failed)} of {len(entries)} notifications failed: {failed[0].get('Code')}")
