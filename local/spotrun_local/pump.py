"""Feed SQS messages to a handler exactly as the Lambda SQS event source does.

Receives a batch, builds the Lambda SQS event (records with messageId, receiptHandle, body,
attributes, eventSourceARN), invokes the handler, and deletes only the records the handler did not
report in `batchItemFailures`; the others become visible again and are retried, then dead-lettered
by the queue's redrive policy: the same at-least-once contract as in AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {k: str(v) for k, v in m.get("Attributes", {}).items()},
                "messageAttributes": {
                    k: {"stringValue": v.get("StringValue"), "dataType": v.get("DataType", "String")}
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class LambdaContext:
    """The parts of the Lambda context object Powertools reads."""

    def __init__(self, name: str):
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = "local"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class SqsPump:
    def __init__(self, sqs: Any, queue_url: str, handler: Handler, name: str, batch_size: int = 10,
                 region: str = "us-east-1", visibility_timeout: int | None = None):
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = min(batch_size, 10)
        self.region = region
        self.context = LambdaContext(name)
        self.visibility_timeout = visibility_timeout
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive + invoke + delete round; returns how many messages were handed to the handler."""
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url, "MaxNumberOfMessages": self.batch_size, "WaitTimeSeconds": wait_seconds,
            "AttributeNames": ["All"], "MessageAttributeNames": ["All"],
        }
        if self.visibility_timeout is not None:
            params["VisibilityTimeout"] = self.visibility_timeout
        messages = self.sqs.receive_message(**params).get("Messages", [])
        if not messages:
            return 0
        event = lambda_sqs_event(messages, self.queue_arn, self.region)
        answer = self.handler(event, self.context) or {}
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])
            ])
        return len(messages)

    def drain(self, rounds: int = 100) -> int:
        total = 0
        for _ in range(rounds):
            handled = self.poll_once()
            if not handled:
                break
            total += handled
        return total
