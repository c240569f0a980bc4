"""Wire messages between the agent and the control plane, and on the control topic.

Shared by the lambdas and the worker agent: one definition of every message shape. Unknown keys are
ignored (forward compatible) but every required field is checked.

Every number is bounded to what it honestly can be, so an accepted message can always be stored:
JSON carries any number, DynamoDB only finite ones of at most 38 significant digits whose magnitude
is 0 or within 1E-130..9.99E+125, so a value outside those (a progress of 1e-200, an exit code of
10**40, NaN) would fail every write and be retried into the dead-letter queue. A message that fails
validation is dropped with a log line and a metric instead (spotrun.handlers.common).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from spotrun.domain.model import Scope
from spotrun.domain.spec import MAX_OUTPUT_PATTERN_CHARS, MAX_OUTPUT_PATTERNS, MAX_TASKS

# Floats on the wire: finite, below this magnitude, and rounded to FLOAT_DECIMALS places, so a tiny
# value (1e-200) becomes 0 rather than underflowing DynamoDB's range, and a float's text (at most 17
# significant digits, see spotrun.adapters.dynamo.codec) always fits its 38.
MAX_WIRE_FLOAT = 1e15
FLOAT_DECIMALS = 9
MAX_SEQ = 2**53 - 1  # sequence numbers stay exact in every JSON reader
MAX_ATTEMPT = 2**31 - 1
MAX_INDEX = MAX_TASKS  # the combine task comes after the last of at most MAX_TASKS tasks
# A control message names at most this many tasks (an SNS message holds 256 KB: far fewer fit anyway).
MAX_INDEXES_PER_MESSAGE = 100_001
JOB_ID_PATTERN = r"^j-[0-9a-f]{20}$"  # what spotrun.jobs generates (new_job_id, idempotent_job_id)
MAX_REASON = 2048  # a report's reason; the agent clips longer ones (spotrun.domain.reasons.clip)


def _rounded(value: float) -> float:
    return round(value, FLOAT_DECIMALS) + 0.0  # + 0.0: no negative zero


def _utc(value: datetime) -> datetime:
    """A naive time is taken as UTC; every time is kept in UTC and within years 2000..9998 (a clock
    that says otherwise is broken, and a time the store cannot write is refused here, not there)."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None
    if not 2000 <= moment.year <= 9998:
        raise ValueError("the time is out of range (years 2000 to 9998)")
    return moment


WireFloat = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_WIRE_FLOAT, le=MAX_WIRE_FLOAT),
                      AfterValidator(_rounded)]
Seconds = Annotated[WireFloat, Field(ge=0)]
WireTime = Annotated[datetime, AfterValidator(_utc)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class AttemptRef(WireModel):
    """Names one attempt of one task: the fencing token every agent message carries."""

    job_id: str = Field(min_length=1, max_length=64)
    index: int = Field(ge=0, le=MAX_INDEX)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    instance_id: str = Field(min_length=1, max_length=64)
    rank: int = Field(0, ge=0, le=63)  # the instance's place in a gang task (0 for a task of one instance)


class ProgramResult(WireModel):
    """What the user's program did, reported apart from what happened to the attempt."""

    # An exit status (0..255 on Linux; any C int elsewhere), and the signal that killed the program.
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    signal: int | None = Field(None, ge=1, le=255)
    log_tail: str = Field("", max_length=8192)
    exec_seconds: Seconds = 0.0


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
    sent_at: WireTime
    outcome: AttemptOutcome
    reason: str = Field("", max_length=MAX_REASON)
    program: ProgramResult | None = None
    outputs: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(default_factory=list, max_length=10_000)
    # Declared output patterns (job or combine `outputs`) that matched no file when the program ended.
    missing_outputs: list[Annotated[str, StringConstraints(max_length=MAX_OUTPUT_PATTERN_CHARS)]] = Field(
        default_factory=list, max_length=MAX_OUTPUT_PATTERNS)
    checkpoint_seq: Seq | None = None
    # Seconds of progress this attempt could not save (since its last committed checkpoint).
    unsaved_seconds: Seconds | None = None
    # The agent keeps its instance to take the job's next queued task (instance reuse).
    keep_instance: bool = False
    # "image": the worker image cannot run the job's checkpoint method (found by the boot check), so
    # no instance booted from it can: a fault of the image (`image_id`), not of this instance or pool.
    fault: Literal["image"] | None = None
    image_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")

    @model_validator(mode="after")
    def _a_completed_program_has_a_status(self) -> CompletionReport:
        """"completed" means the program ran to its end: its exit code or the signal that killed it is
        the result to judge. Without either the report says nothing (it used to fail the task with
        "program exited with code None")."""
        if self.outcome == "completed" and (self.program is None or (
                self.program.exit_code is None and self.program.signal is None)):
            raise ValueError("a completed attempt reports its program's exit code or signal")
        return self

    @property
    def scope(self) -> Scope | None:
        if self.outcome == "environment_error" or self.outcome == "interrupted":
            return Scope.ENVIRONMENT
        if self.outcome == "input_error":
            return Scope.INPUT
        if self.outcome == "completed" and self.program and (self.program.exit_code != 0 or self.missing_outputs):
            return Scope.PROGRAM
        return None


# The values of spotrun.resources.MessageType (the control topic's filter policies name the same).
ControlType = Literal["JobSubmitted", "TasksRunnable", "CapacityFreed", "JobControl"]


class ControlMessage(WireModel):
    """A message on the control topic; `type` is also its SNS message attribute."""

    type: ControlType
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    indexes: list[Annotated[int, Field(ge=0, le=MAX_INDEX)]] = Field(default_factory=list,
                                                                                  max_length=MAX_INDEXES_PER_MESSAGE)
    reason: str = Field("", max_length=1024)
