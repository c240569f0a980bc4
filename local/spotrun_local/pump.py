"""Feed SQS messages to a handler exactly as the Lambda SQS event source does.

Receives a batch, builds the Lambda SQS event (records with messageId, receiptHandle, body,
attributes, eventSourceARN), invokes the handler, and deletes only the records the handler did not
report in `batchItemFailures`; the others become visible again and are retried, then dead-lettered
by the queue's redrive policy: the same at-least-once contract as in AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spotrun_local.wiring import LambdaContext

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


class SqsPump:
    """Consumes one queue for one handler. `name` names the pump (the queue's key in the local runtime);
    `context` is the Lambda context handed to the handler (by default one named after the pump)."""

    def __init__(self, sqs: Any, queue_url: str, handler: Handler, name: str, batch_size: int = 10,
                 region: str = "us-east-1", visibility_timeout: int | None = None, context: Any = None):
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.name = name
        self.batch_size = min(batch_size, 10)  # what one ReceiveMessage returns at most
        self.region = region
        self.context = context or LambdaContext(name)
        self.visibility_timeout = visibility_timeout
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def receive(self, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """One ReceiveMessage, as the event source mapping polls (all attributes, its visibility timeout)."""
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url, "MaxNumberOfMessages": self.batch_size, "WaitTimeSeconds": wait_seconds,
            "AttributeNames": ["All"], "MessageAttributeNames": ["All"],
        }
        if self.visibility_timeout is not None:
            params["VisibilityTimeout"] = self.visibility_timeout
        messages: list[dict[str, Any]] = self.sqs.receive_message(**params).get("Messages", [])
        return messages

    def invoke(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hands the messages to the handler as one Lambda SQS event; returns those it did not report failed."""
        answer = self.handler(lambda_sqs_event(messages, self.queue_arn, self.region), self.context) or {}
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        return [m for m in messages if m["MessageId"] not in failed]

    def delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages[start:start + 10])
            ])

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive + invoke + delete round; returns how many messages were handed to the handler."""
        messages = self.receive(wait_seconds)
        if messages:
            self.delete(self.invoke(messages))
        return len(messages)

    def drain(self, rounds: int = 100) -> int:
        total = 0
        for _ in range(rounds):
            handled = self.poll_once()
            if not handled:
                break
            total += handled
        return total
