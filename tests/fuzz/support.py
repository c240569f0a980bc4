"""Helpers of the fuzz and bad-input tests: what the table and queues hold, and SQS events as Lambda gets them."""

from __future__ import annotations

import json
import uuid
from typing import Any

JOB_ITEM_PREFIXES = ("JOB#", "TASK#", "EVENTS#")  # what a submitted job writes (see spotrun.adapters.dynamo)


def table_items(cp: Any) -> list[dict[str, Any]]:
    """Every item of the table (a scan: fine in a test)."""
    items: list[dict[str, Any]] = []
    start = None
    while True:
        page = cp.store.client.scan(TableName=cp.store.table, **({"ExclusiveStartKey": start} if start else {}))
        items += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def item_count(cp: Any) -> int:
    """How many items the table holds: moto counts them exactly and at once (DynamoDB only every few hours)."""
    return cp.store.client.describe_table(TableName=cp.store.table)["Table"]["ItemCount"]


def job_items(cp: Any) -> list[str]:
    """The keys of the job, task and timeline items in the table."""
    return sorted(item["pk"]["S"] for item in table_items(cp) if item["pk"]["S"].startswith(JOB_ITEM_PREFIXES))


def sqs_event(*bodies: str, queue: str = "spotrun-test") -> dict[str, Any]:
    """A batch of SQS records as the event source mapping hands it to Lambda."""
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": f"handle-{n}", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795435200000",
                       "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1795435200000"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}", "awsRegion": "us-east-1",
    } for n, body in enumerate(bodies)]}


def sns_envelope(message: str, message_type: str = "JobSubmitted") -> str:
    """An SNS notification as a subscribed SQS queue receives it (raw delivery off): the SQS body."""
    return json.dumps({
        "Type": "Notification", "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:spotrun-control", "Message": message,
        "Timestamp": "2026-11-23T12:00:00.000Z", "SignatureVersion": "1", "Signature": "EXAMPLE",
        "MessageAttributes": {"type": {"Type": "String", "Value": message_type}},
    })
