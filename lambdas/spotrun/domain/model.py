"""Stored shapes of the control plane: jobs, tasks, attempts, checkpoints, pools, timeline events.

Plain dataclasses: the domain reads them, the DynamoDB adapter maps them to and from items, and the
worker agent shares them, so there is one definition of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    WAITING = "WAITING"  # a combine task until every task succeeded
    QUEUED = "QUEUED"
    LAUNCHING = "LAUNCHING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
# States that hold a worker (count against max_concurrency and the account cap).
ACTIVE_STATES = frozenset({TaskState.LAUNCHING, TaskState.RUNNING})


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Desired(StrEnum):
    """What the user asked of a task or job; the agent reads it on every heartbeat tick."""

    RUN = "RUN"
    CHECKPOINT = "CHECKPOINT"  # take a checkpoint now, keep running
    SUSPEND = "SUSPEND"
    CANCEL = "CANCEL"


class Scope(StrEnum):
    """Who owns an error (the Condor lesson): decides whether and where it is retried."""

    PROGRAM = "program"
    ENVIRONMENT = "environment"
    TRANSIENT = "transient"
    INPUT = "input"


class Market(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    key: str  # S3 prefix holding the files and the manifest
    attempt: int
    size_bytes: int
    committed_at: datetime
    method: str
    ranks: int = 1  # a gang checkpoint's parts (one per rank), all named by its one manifest
    # What the agent predicts its final checkpoint (on a spot warning) takes, from this checkpoint's
    # measured image size, capture and upload rates; and whether that fits the warning's budget.
    predicted_final_seconds: float | None = None
    final_fits_warning: bool | None = None
    capture_bytes_per_second: float | None = None
    upload_bytes_per_second: float | None = None
    final_budget_seconds: float | None = None  # the warning less the agent's margins

    @property
    def final_note(self) -> str | None:
        """`final checkpoint fits warning: no, predicted 140 s`, or None when nothing was predicted."""
        if self.final_fits_warning is None or self.predicted_final_seconds is None:
            return None
        said = "yes" if self.final_fits_warning else "no"
        return f"final checkpoint fits warning: {said}, predicted {self.predicted_final_seconds:.0f} s"


@dataclass(frozen=True)
class Job:
    job_id: str
    name: str
    spec: dict[str, Any]
    state: JobState
    task_count: int  # tasks of the problem, without the combine task
    has_combine: bool
    counts: dict[str, int]  # tasks (combine included) per TaskState
    active: int  # tasks holding a worker
    desired: Desired
    created_at: datetime
    updated_at: datetime
    owner: str = ""
    reason: str = ""
    policy_note: str = ""  # what the deadline policy last decided for the job's queued tasks, and why
    stats: dict[str, float] = field(default_factory=dict)  # "<pool>|<measure>" -> total, see spotrun.domain.accounting
    # Tasks stored lazily (a sweep of any size): tasks [0, materialized) have items, tasks
    # [materialized, task_count) have none yet and are all in `pending_state` (QUEUED until the job is
    # suspended or cancelled), counted in `counts` like stored ones; the scheduler stores them as it admits
    # them. A task the user cancelled one by one may have an item beyond `materialized` (always CANCELLED).
    # None: every task has its item (jobs stored before lazy tasks).
    materialized: int | None = None
    pending_state: TaskState = TaskState.QUEUED
    stored_ahead: int = 0  # items beyond `materialized` (tasks cancelled one by one before their admission)

    @property
    def combine_index(self) -> int | None:
        return self.task_count if self.has_combine else None

    @property
    def pending(self) -> int:
        """Tasks without an item yet: all in `pending_state`."""
        return 0 if self.materialized is None else self.task_count - self.materialized - self.stored_ahead

    def is_pending(self, index: int) -> bool:
        return self.materialized is not None and self.materialized <= index < self.task_count

    def pending_task(self, index: int) -> Task | None:
        """Task `index` as it stands while it has no item: fresh, in the pending state; None if it is stored."""
        if not self.is_pending(index):
            return None
        return Task(job_id=self.job_id, index=index, state=self.pending_state, attempt=0, updated_at=self.updated_at)


@dataclass(frozen=True)
class Task:
    job_id: str
    index: int
    state: TaskState
    # The number of the attempt that owns the task: launched attempts only, as users count them. A launch
    # EC2 refused gives its number back (`revert_attempt`), so with `admissions` (every admission, never
    # given back) it is the fencing token of the task's guarded moves.
    attempt: int
    desired: Desired = Desired.RUN
    desired_at: datetime | None = None  # when the user's wish (cancel, suspend) was recorded
    kind: str = "task"  # or "combine"
    admissions: int = 0  # every admission of an attempt, refused launches included: never goes down
    pool: str | None = None
    market: Market | None = None
    price_per_hour: float | None = None  # what the current attempt's instance costs
    instance_id: str | None = None
    program_failures: int = 0
    environment_failures: int = 0
    interruptions: int = 0
    consecutive_environment_failures: int = 0
    avoid_pools: tuple[str, ...] = ()
    checkpoint: Checkpoint | None = None
    draining_attempt: int | None = None  # an interrupted attempt still allowed to commit a final checkpoint
    checkpoint_requested_at: datetime | None = None  # an early checkpoint was asked for (rebalance, user)
    # The launch call of the current admission: its client token, this task's slot in it and the number of
    # instances it asked for, so a call whose answer was lost can be sent again as it was (the same token).
    launch_token: str | None = None
    launch_slot: int = 0
    launch_count: int = 1
    # A gang task (the job's `nodes` > 1) runs each attempt on `nodes` instances of one pool; `instance_id`
    # is rank 0's, `gang_instances` every rank's, by rank.
    nodes: int = 1
    gang_instances: tuple[str, ...] = ()
    last_heartbeat_at: datetime | None = None
    progress: float | None = None
    exit_code: int | None = None
    reason: str = ""
    log_tail: str = ""
    launched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    job_id: str
    index: int
    number: int
    pool: str
    market: Market
    instance_id: str | None = None
    launched_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    scope: Scope | None = None
    exit_code: int | None = None
    exec_seconds: float = 0.0
    price_per_hour: float | None = None
    # When an interrupted attempt's final report arrived (after its final checkpoint): the handover.
    drained_at: datetime | None = None
    restored_seq: int | None = None  # the checkpoint this attempt started from
    restored_from: int | None = None  # the attempt that had taken it
    nodes: int = 1  # instances the attempt ran on (a gang's), each billed
    gang_instances: tuple[str, ...] = ()  # a gang attempt's instances, by rank


@dataclass(frozen=True)
class Worker:
    """An instance spotrun launched, and the attempt it serves."""

    instance_id: str
    job_id: str
    index: int
    attempt: int
    pool: str
    launched_at: datetime
    rank: int = 0  # its place in a gang (0 for a task of one instance)


def task_instances(task: Task) -> tuple[str, ...]:
    """Every instance the task's current attempt runs on: a gang's ranks, else its one instance."""
    if task.gang_instances:
        return task.gang_instances
    return (task.instance_id,) if task.instance_id else ()


@dataclass(frozen=True)
class PoolStats:
    pool: str
    executions: int = 0
    failures: int = 0
    interruptions: int = 0
    exec_seconds: float = 0.0
    running: int = 0
    cooldown_until: datetime | None = None
    cooldown_reason: str = ""  # why it cools down: EC2's launch error, or a spot reclaim
    cooled_at: datetime | None = None  # when that happened
    # Checkpoint uploads measured by agents in this pool (committed bytes, and the seconds they took).
    upload_bytes: float = 0.0
    upload_seconds: float = 0.0


@dataclass(frozen=True)
class ImageFault:
    """A worker image that cannot run a checkpoint method, as its first report said, until `until`."""

    image_id: str
    method: str
    reason: str
    job_id: str  # the task whose instance found it
    index: int
    noted_at: datetime
    until: datetime


@dataclass(frozen=True)
class TimelineEvent:
    job_id: str
    at: datetime
    kind: str  # e.g. TaskLaunching, TaskStarted, CheckpointCommitted, TaskInterrupted, TaskSucceeded (README)
    event_id: str  # deterministic, so a redelivered message writes the same event once
    index: int | None = None
    attempt: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    """One line of an attempt's log (the agent's and the program's output), as CloudWatch Logs keeps it."""

    at: datetime
    message: str
