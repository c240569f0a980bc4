"""The attempts' logs in CloudWatch Logs: one stream per attempt (`spotrun.access.log_stream`) in the
deployment's log group. The worker-api function opens each stream when its attempt claims the task;
the agent writes it with its task credentials (which reach no other stream); the API and the console
read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from spotrun.access import log_stream
from spotrun.domain.model import LogLine

# GetLogEvents answers at most 10,000 events (1 MB) per call.
MAX_EVENTS_PER_READ = 10_000


class CloudWatchTaskLogs:
    def __init__(self, client: Any, group: str):
        self.client = client
        self.group = group

    def open_stream(self, job_id: str, index: int, attempt: int) -> None:
        try:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=log_stream(job_id, index, attempt))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                raise

    def read(self, job_id: str, index: int, attempt: int, token: str | None, limit: int,
             newest: bool = False) -> tuple[list[LogLine], str]:
        params: dict[str, Any] = {"logGroupName": self.group, "logStreamName": log_stream(job_id, index, attempt),
                                  "limit": max(1, min(limit, MAX_EVENTS_PER_READ))}
        if token:
            params["nextToken"] = token
        else:
            params["startFromHead"] = not newest
        try:
            answer = self.client.get_log_events(**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "ResourceNotFoundException":  # the attempt never claimed its task: nothing was written
                return [], token or ""
            if code == "InvalidParameterException" and token:
                raise ValueError("the log token is not one this API gave out (or it expired)") from None
            raise
        lines = [LogLine(datetime.fromtimestamp(event["timestamp"] / 1000, UTC), event.get("message", ""))
                 for event in answer.get("events", [])]
        return lines, str(answer.get("nextForwardToken") or token or "")
