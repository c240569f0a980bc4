"""Task credentials: a session of the task role per attempt, tagged with its task (`spotrun.access`)."""

from __future__ import annotations

from typing import Any

# Role chaining (the worker-api function's role assumes the task role) caps a session at one hour;
# the agent renews through the worker routes well before it ends.
SESSION_SECONDS = 3600


class TaskCredentials:
    def __init__(self, client: Any, role_arn: str, seconds: int = SESSION_SECONDS):
        self.client = client
        self.role_arn = role_arn
        self.seconds = seconds

    def issue(self, session_name: str, tags: dict[str, str]) -> dict[str, str]:
        answer = self.client.assume_role(
            RoleArn=self.role_arn, RoleSessionName=session_name, DurationSeconds=self.seconds,
            Tags=[{"Key": key, "Value": value} for key, value in sorted(tags.items())],
        )
        credentials = answer["Credentials"]
        return {"access_key_id": credentials["AccessKeyId"], "secret_access_key": credentials["SecretAccessKey"],
                "session_token": credentials["SessionToken"], "expiration": credentials["Expiration"].isoformat()}
