"""The task state machine, outcome classification and job state derivation: pure functions.

A handler reads a task, asks one of these functions what should happen, and the store applies the
answer as a conditional write guarded by the state and attempt it read. A duplicate, late or
out-of-order message therefore finds the task moved on, and the function answers "nothing".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spotrun.domain.messages import CompletionReport
from spotrun.domain.model import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Desired,
    JobState,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
)
from spotrun.domain.spec import RetrySpec

# Which moves are legal at all; everything else is a bug or a stale message.
ALLOWED = {
    TaskState.WAITING: {TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED},
    # QUEUED -> FAILED: admission fails a task no instance can run (spotrun.images: a faulty worker image).
    TaskState.QUEUED: {TaskState.LAUNCHING, TaskState.SUSPENDED, TaskState.CANCELLED, TaskState.FAILED},
    TaskState.LAUNCHING: {
        TaskState.RUNNING, TaskState.QUEUED, TaskState.LAUNCHING, TaskState.SUSPENDED,
        TaskState.CANCELLED, TaskState.FAILED,
    },
    TaskState.RUNNING: {
        TaskState.SUCCEEDED, TaskState.FAILED, TaskState.QUEUED, TaskState.LAUNCHING,
        TaskState.SUSPENDED, TaskState.CANCELLED,
    },
    TaskState.SUSPENDED: {TaskState.QUEUED, TaskState.CANCELLED},
    TaskState.SUCCEEDED: set(),
    TaskState.FAILED: set(),
    TaskState.CANCELLED: set(),
}


@dataclass(frozen=True)
class TaskChange:
    """One guarded move of a task: applied only if the task is still `from_state` at `attempt`."""

    task: Task
    to_state: TaskState
    event: str  # timeline event kind
    reason: str = ""
    new_attempt: bool = False  # the move admits the next attempt (the attempt number and admissions go up)
    revert_attempt: bool = False  # the launch of the admitted attempt was refused: its number is given back
    set_fields: dict[str, Any] = field(default_factory=dict)
    remove_fields: tuple[str, ...] = ()
    increments: dict[str, int] = field(default_factory=dict)
    end_attempt: AttemptEnd | None = None

    def __post_init__(self) -> None:
        if self.to_state not in ALLOWED[self.task.state]:
            raise ValueError(f"task cannot go from {self.task.state} to {self.to_state}")
        if self.new_attempt and self.revert_attempt:
            raise ValueError("a move cannot both admit an attempt and give one back")

    @property
    def from_state(self) -> TaskState:
        return self.task.state

    @property
    def active_delta(self) -> int:
        """Instances the move takes (or frees): a gang task holds all its nodes' (the caps count instances)."""
        return (int(self.to_state in ACTIVE_STATES) - int(self.from_state in ACTIVE_STATES)) * self.task.nodes

    @property
    def attempt(self) -> int:
        """The attempt that owns the task after the move."""
        return self.task.attempt + int(self.new_attempt) - int(self.revert_attempt)

    @property
    def admissions(self) -> int:
        """The task's admissions after the move."""
        return self.task.admissions + int(self.new_attempt)


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, for the attempt record and the pool's statistics."""

    attempt: int
    pool: str
    outcome: str
    scope: Scope | None
    exit_code: int | None = None
    exec_seconds: float = 0.0
    interrupted: bool = False
    launched: bool = True  # False when the launch call itself failed: no execution to count

    @property
    def executions(self) -> int:
        return int(self.launched)

    @property
    def failures(self) -> int:
        """An environment fault counts against its pool; an interruption is spot's price, not a failure."""
        return int(self.launched and self.scope == Scope.ENVIRONMENT and not self.interrupted)


# Timeline event kinds a user counts by (README, "Timeline events").
LAUNCHING = "TaskLaunching"  # an attempt was admitted and its instance is being launched
LAUNCH_REFUSED = "LaunchRefused"  # EC2 refused the launch (no capacity in the pool): not an attempt
INTERRUPTED = "TaskInterrupted"  # spot reclaimed the attempt's instance (warned or not): one per interruption
ENVIRONMENT_FAULT = "EnvironmentFault"  # the attempt was lost to anything else in the environment


def timeline_events(change: TaskChange, now: datetime, detail: dict[str, Any] | None = None) -> list[TimelineEvent]:
    """What the job's timeline says of a move (written with it); their ids make a repeated move's events one.

    Each event names the attempt it is about: a refused launch names none (it was no attempt); a move
    that ends an attempt and starts the next at once (a warned reclaim's replacement) is two events, the
    end of the one attempt and the launch of the other.
    """
    task = change.task
    body: dict[str, Any] = {"from": task.state.value, "to": change.to_state.value,
                            **({"reason": change.reason} if change.reason else {})}
    def event_id(admissions: int, admits: bool, kind: str) -> str:
        # Events at the same instant sort by id: per task by admission, its admission before what followed it
        # (a refusal, the next admission), so the timeline reads in order whatever the clock's resolution.
        return f"{task.index}-{admissions:06d}-{0 if admits else 1}-{kind}-{task.state}"

    if change.revert_attempt:
        refused = {**body, "pool": task.pool, **(detail or {})}
        return [TimelineEvent(task.job_id, now, change.event, event_id(task.admissions, False, change.event),
                              task.index, None, refused)]
    if change.new_attempt and change.end_attempt is not None:
        ended_ = {**body, "pool": change.end_attempt.pool, "replacement": change.attempt}
        launching = {"from": task.state.value, "to": change.to_state.value, "pool": change.set_fields.get("pool"),
                     **(detail or {})}
        return [
            TimelineEvent(task.job_id, now, change.event, event_id(task.admissions, False, change.event),
                          task.index, task.attempt, ended_),
            TimelineEvent(task.job_id, now, LAUNCHING, event_id(change.admissions, True, LAUNCHING),
                          task.index, change.attempt, launching),
        ]
    if change.set_fields.get("pool"):
        body["pool"] = change.set_fields["pool"]
    body.update(detail or {})
    return [TimelineEvent(task.job_id, now, change.event, event_id(change.admissions, change.new_attempt, change.event),
                          task.index, change.attempt, body)]


def ended(task: Task, outcome: str, scope: Scope | None, **details: Any) -> AttemptEnd:
    return AttemptEnd(
        attempt=task.attempt, pool=task.pool or "unknown", outcome=outcome, scope=scope,
        interrupted=outcome == "interrupted", **details,
    )


def after_completion(task: Task, report: CompletionReport, retries: RetrySpec) -> TaskChange | None:
    """What a completion report does to its task; None when the report is stale or a duplicate."""
    if report.attempt != task.attempt or task.state not in ACTIVE_STATES:
        return None
    program = report.program
    exit_code = program.exit_code if program else None
    exec_seconds = program.exec_seconds if program else 0.0
    log_tail = program.log_tail if program else ""
    end = ended(task, report.outcome, report.scope, exit_code=exit_code, exec_seconds=exec_seconds)
    finished = {"exit_code": exit_code, "log_tail": log_tail}

    if report.outcome == "completed" and exit_code == 0 and not report.missing_outputs:
        return TaskChange(task, TaskState.SUCCEEDED, "TaskSucceeded", set_fields=finished, end_attempt=end)
    if report.outcome == "completed":
        return _program_failed(task, exit_code, report, retries, end, finished)
    if report.outcome == "input_error":
        return TaskChange(
            task, TaskState.FAILED, "TaskFailed", reason=f"input: {report.reason}", set_fields=finished,
            end_attempt=end,
        )
    if report.outcome == "suspended":
        return TaskChange(task, TaskState.SUSPENDED, "TaskSuspended", end_attempt=end, set_fields={"desired": Desired.RUN})
    if report.outcome == "cancelled":
        return TaskChange(task, TaskState.CANCELLED, "TaskCancelled", reason="cancelled by the user", end_attempt=end)
    if report.outcome == "environment_error" and report.fault == "image":
        return image_fault(task, report.image_id, report.reason, end)
    # interrupted or environment_error: the environment's fault, never the program's.
    return environment_fault(
        task, report.reason or report.outcome, retries, end, reclaimed=report.outcome == "interrupted"
    )


def _program_failed(
    task: Task,
    exit_code: int | None,
    report: CompletionReport,
    retries: RetrySpec,
    end: AttemptEnd,
    finished: dict[str, Any],
) -> TaskChange:
    signal = report.program.signal if report.program else None
    if exit_code == 0 and report.missing_outputs:
        # A declared output that is not there fails the program, as in HTCondor: a result nobody can
        # download is no success. Retried like any program failure, except when `exit_codes` names the
        # failures worth another run (a clean exit without its outputs is none of them).
        what = f"exited with code 0 but {missing_outputs_text(report.missing_outputs)}"
        retryable = not retries.exit_codes
    else:
        what = f"killed by signal {signal}" if signal else f"exited with code {exit_code}"
        retryable = not retries.exit_codes or exit_code in retries.exit_codes
    if retryable and task.program_failures < retries.program:
        return TaskChange(
            task, TaskState.QUEUED, "TaskRetrying", reason=f"program {what}; retry {task.program_failures + 1} of {retries.program}",
            set_fields=finished, increments={"program_failures": 1}, end_attempt=end,
        )
    return TaskChange(
        task, TaskState.FAILED, "TaskFailed", reason=f"program {what}", set_fields=finished,
        increments={"program_failures": 1}, end_attempt=end,
    )


MISSING_OUTPUTS_SHOWN = 10


def missing_outputs_text(patterns: Sequence[str]) -> str:
    """'declared output result.json matched no file' (the first few patterns, then how many more)."""
    shown = ", ".join(patterns[:MISSING_OUTPUTS_SHOWN])
    more = f" and {len(patterns) - MISSING_OUTPUTS_SHOWN} more" if len(patterns) > MISSING_OUTPUTS_SHOWN else ""
    plural = len(patterns) > 1
    return f"declared output{'s' if plural else ''} {shown}{more} matched no file"


def environment_fault(
    task: Task, reason: str, retries: RetrySpec, end: AttemptEnd | None, reclaimed: bool = False
) -> TaskChange:
    """The attempt was lost to the environment: retry elsewhere, never against the program's budget.

    A spot reclaim is the normal price of spot and its progress is kept by the checkpoint, so it
    does not use up the environment budget (a long job in a busy pool would otherwise fail); it
    does count as a fault in a row, which is what moves a task to on-demand.
    """
    pool = task.pool
    avoid = tuple(dict.fromkeys((*task.avoid_pools, pool))) if pool else task.avoid_pools
    increments = {"interruptions": 1} if reclaimed else {"environment_failures": 1}
    event = INTERRUPTED if reclaimed else ENVIRONMENT_FAULT
    common: dict[str, Any] = {
        "increments": {**increments, "consecutive_environment_failures": 1},
        "set_fields": {"avoid_pools": list(avoid[-10:])},
        "end_attempt": end,
    }
    if not reclaimed and task.environment_failures >= retries.environment:
        return TaskChange(
            task, TaskState.FAILED, "TaskFailed",
            reason=f"environment: {reason} (environment retries exhausted: {retries.environment})", **common,
        )
    return TaskChange(task, TaskState.QUEUED, event, reason=f"environment: {reason}", **common)


def image_fault_reason(image_id: str | None, problem: str) -> str:
    return f"environment: worker image {image_id or '(id unknown)'}: {problem}"


def image_fault(task: Task, image_id: str | None, problem: str, end: AttemptEnd | None) -> TaskChange:
    """The worker image cannot run the task's checkpoint method: every instance boots that image, so
    another attempt, in this pool or any other, fails the same way. The task fails at once with the
    image's reason (which says what to do) instead of using up its environment retries on new boots."""
    return TaskChange(
        task, TaskState.FAILED, "TaskFailed", reason=image_fault_reason(image_id, problem),
        increments={"environment_failures": 1}, end_attempt=end,
    )


def derive_job_state(counts: dict[str, int], desired: Desired) -> JobState:
    """A job's state follows from how many of its tasks are in each state."""
    total = sum(counts.values())
    busy = sum(counts.get(s, 0) for s in (TaskState.LAUNCHING, TaskState.RUNNING))
    queued = counts.get(TaskState.QUEUED, 0)
    if busy:
        return JobState.RUNNING
    if queued:
        return JobState.RUNNING if _any_started(counts) else JobState.QUEUED
    if counts.get(TaskState.SUSPENDED, 0):
        return JobState.SUSPENDED
    finished = sum(counts.get(s, 0) for s in TERMINAL_STATES)
    if total and finished + counts.get(TaskState.WAITING, 0) == total and counts.get(TaskState.WAITING, 0) == 0:
        if counts.get(TaskState.FAILED, 0):
            return JobState.FAILED
        if counts.get(TaskState.CANCELLED, 0) or desired == Desired.CANCEL:
            return JobState.CANCELLED
        return JobState.SUCCEEDED
    return JobState.RUNNING if _any_started(counts) else JobState.QUEUED


def _any_started(counts: dict[str, int]) -> bool:
    return any(counts.get(s, 0) for s in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED))


def run_seconds(task: Task, until: datetime) -> float:
    """How long the task's current attempt has run, from its claim until `until`: for an attempt that ends
    with no report saying how long its program ran (cancelled without its agent, lost, replaced), the
    control plane's measure of its execution time (staging and restore included)."""
    if task.state != TaskState.RUNNING or task.started_at is None:
        return 0.0
    return max(0.0, (until - task.started_at).total_seconds())


def last_sign_of_life(task: Task) -> datetime | None:
    """The newest of the task's last heartbeat, start and launch (a heartbeat may be a past attempt's)."""
    moments = [m for m in (task.last_heartbeat_at, task.started_at, task.launched_at) if m is not None]
    return max(moments) if moments else None
