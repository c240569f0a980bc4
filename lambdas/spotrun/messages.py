"""Wire messages between the agent and the control plane, and on the control topic.

Shared by the lambdas and the worker agent: one definition of every message shape. Unknown keys are
ignored (forward compatible) but every required field is checked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spotrun.model import Scope


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AttemptRef(WireModel):
    """Names one attempt of one task: the fencing token every agent message carries."""

    job_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0)
    attempt: int = Field(ge=1)
    instance_id: str = Field(min_length=1, max_length=64)


class Heartbeat(AttemptRef):
    kind: Literal["heartbeat"] = "heartbeat"
    sent_at: datetime
    phase: Literal["staging", "restoring", "running", "checkpointing", "uploading"] = "running"
    progress: float | None = Field(None, ge=0, le=1)
    cpu_percent: float | None = Field(None, ge=0)
    memory_bytes: int | None = Field(None, ge=0)
    checkpoint_seq: int | None = None


class ProgramResult(WireModel):
    """What the user's program did, reported apart from what happened to the attempt."""

    exit_code: int | None = None
    signal: int | None = None
    log_tail: str = Field("", max_length=8192)
    exec_seconds: float = Field(0.0, ge=0)


AttemptOutcome = Literal[
    "completed",  # the program ran to its end (whatever its exit code)
    "interrupted",  # the instance is going away (spot reclaim, health event) after a final checkpoint
    "suspended",  # checkpointed and stopped because the user asked
    "cancelled",  # stopped because the user asked
    "environment_error",  # disk full, agent crash, checkpointer failure, restore failure
    "input_error",  # an input was missing or unreadable
]


class CompletionReport(AttemptRef):
    kind: Literal["completion"] = "completion"
    sent_at: datetime
    outcome: AttemptOutcome
    reason: str = Field("", max_length=2048)
    program: ProgramResult | None = None
    outputs: list[str] = Field(default_factory=list, max_length=10_000)
    checkpoint_seq: int | None = None
    # Seconds of progress this attempt could not save (since its last committed checkpoint).
    unsaved_seconds: float | None = Field(None, ge=0)
    # The agent keeps its instance to take the job's next queued task (instance reuse).
    keep_instance: bool = False

    @property
    def scope(self) -> Scope | None:
        if self.outcome == "environment_error" or self.outcome == "interrupted":
            return Scope.ENVIRONMENT
        if self.outcome == "input_error":
            return Scope.INPUT
        if self.outcome == "completed" and self.program and self.program.exit_code != 0:
            return Scope.PROGRAM
        return None


class ControlMessage(WireModel):
    """A message on the control topic; `type` is also its SNS message attribute."""

    type: str
    job_id: str
    indexes: list[int] = Field(default_factory=list)
    reason: str = ""
