"""The ports: what the use cases ask of the world, as Protocols, and nothing more.

The use cases (`jobs`, `scheduling`, `attempts`, `reaping`, `assignments`, `bookkeeping`) see
only these; the adapters (`spotrun.adapters`) implement them on AWS, the tests with moto or fakes.
A method no use case calls is not here (the store has more, for the agent and the tools).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from spotrun.domain.interruptions import ScheduledMove
from spotrun.domain.launches import InstanceStatus, LaunchRequest, LaunchResult, ManagedInstance
from spotrun.domain.lifecycle import TaskChange
from spotrun.domain.messages import ControlMessage
from spotrun.domain.model import (
    Attempt,
    Checkpoint,
    Desired,
    ImageFault,
    Job,
    JobState,
    LogLine,
    PoolStats,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
    Worker,
)

Clock = Callable[[], datetime]
Page = str | None  # an opaque token to the next page, None on the last


class JobRecords(Protocol):
    def create_job(self, job: Job, tasks: Sequence[dict[str, Any]], event: TimelineEvent) -> bool:
        """Store a job with its tasks; False if a job with that id exists already (idempotent submit)."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def list_jobs(self, states: Sequence[JobState], limit: int, token: str | None) -> tuple[list[Job], Page]: ...

    def set_job_desired(self, job_id: str, desired: Desired, allowed_from: Sequence[Desired], now: datetime) -> bool: ...

    def set_job_reason(self, job_id: str, reason: str) -> None:
        """What the user should know about the job beyond its counts (e.g. that its combine will not run)."""
        ...

    def set_job_policy_note(self, job_id: str, note: str) -> None:
        """What the deadline policy last decided for the job (shown while its tasks wait)."""
        ...

    def refresh_job_state(self, job_id: str, derive: Callable[[dict[str, int], Desired], JobState],
                          now: datetime) -> Job | None: ...


class TaskRecords(Protocol):
    def get_task(self, job_id: str, index: int, consistent: bool = True) -> Task | None: ...

    def tasks(self, refs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Task]: ...

    def tasks_in_state(self, job_id: str, state: TaskState, limit: int) -> list[Task]: ...

    def list_tasks(self, job_id: str, state: TaskState | None, limit: int, token: str | None) -> tuple[list[Task], Page]:
        ...

    def record_beat(self, job_id: str, index: int, attempt: int, at: datetime, progress: float | None = None) -> bool: ...

    def set_task_desired(self, job_id: str, index: int, desired: Desired, states: Sequence[TaskState],
                         at: datetime) -> bool: ...

    def commit_checkpoint(self, job_id: str, index: int, checkpoint: Checkpoint) -> bool: ...

    def request_checkpoint(self, job_id: str, index: int, attempt: int, at: datetime) -> bool: ...

    def stale_live_tasks(self, before: datetime, limit: int) -> list[Task]: ...


class PendingTasks(Protocol):
    """A big job's tasks stored lazily (`Job.materialized`): each write holds only while the job's pending
    tasks stand as read (None / False: read the job again)."""

    def materialize(self, job: Job, tasks: Sequence[dict[str, Any]], now: datetime) -> list[Task] | None: ...

    def move_pending(self, job: Job, to_state: TaskState, event: TimelineEvent, now: datetime) -> bool: ...

    def cancel_ahead(self, job: Job, index: int, event: TimelineEvent, now: datetime) -> Task | None: ...


class TaskMoves(Protocol):
    """Guarded moves: False when a task was no longer where its change found it (nothing written)."""

    def apply(self, change: TaskChange, now: datetime, event_detail: dict[str, Any] | None = None) -> bool: ...

    def apply_many(self, changes: Sequence[TaskChange], now: datetime, event_detail: dict[str, Any] | None = None,
                   job_conditions: dict[str, Any] | None = None) -> bool: ...

    def account_active(self) -> int: ...


class AttemptRecords(Protocol):
    def bind_instances(self, bindings: Sequence[tuple[str, int, int, str]], pool: str, now: datetime) -> None: ...

    def bind_gang(self, job_id: str, index: int, attempt: int, instance_ids: Sequence[str], pool: str,
                  now: datetime) -> bool: ...

    def bind_instance(self, job_id: str, index: int, attempt: int, instance_id: str, pool: str,
                      now: datetime) -> bool: ...

    def record_attempt_end(self, job_id: str, index: int, attempt: int, outcome: str, scope: Scope | None,
                           exec_seconds: float, now: datetime) -> bool: ...

    def record_restore(self, job_id: str, index: int, attempt: int, seq: int, from_attempt: int) -> None: ...

    def attempts(self, job_id: str, index: int) -> list[Attempt]:
        """Every attempt record of a task, oldest first."""
        ...

    def worker(self, instance_id: str) -> Worker | None: ...

    def workers(self, instance_ids: Sequence[str]) -> dict[str, Worker]: ...


class PoolRecords(Protocol):
    def pool_stats(self, pools: Sequence[str]) -> dict[str, PoolStats]: ...

    def record_pool_upload(self, pool: str, size_bytes: int, seconds: float) -> None: ...

    def cool_down(self, pool: str, until: datetime, reason: str = "", at: datetime | None = None) -> None: ...


class Timeline(Protocol):
    def add_event(self, event: TimelineEvent) -> None: ...

    def timeline(self, job_id: str, limit: int, after: str | None = None, newest: bool = False) -> list[TimelineEvent]:
        """Events oldest first: the first `limit` after the cursor, or (`newest`) the newest `limit`."""
        ...

    def task_events(self, job_id: str, index: int, kind: str, limit: int, pages: int = 4) -> list[TimelineEvent]:
        """One task's newest `limit` events of one kind, newest first (reading at most `pages` pages)."""
        ...


class ImageFaults(Protocol):
    def record_image_fault(self, fault: ImageFault) -> bool:
        """Note the fault unless a note of that image and method still stands; True for a new note."""
        ...

    def image_fault(self, image_id: str, method: str, now: datetime) -> ImageFault | None: ...


class ScheduledMoves(Protocol):
    """Tasks to move off instances before a scheduled change (AWS Health), one per instance."""

    def schedule_move(self, move: ScheduledMove) -> None: ...

    def scheduled_moves(self, limit: int) -> list[ScheduledMove]: ...

    def forget_move(self, instance_id: str) -> None: ...


class Store(JobRecords, TaskRecords, PendingTasks, TaskMoves, AttemptRecords, PoolRecords, Timeline, ImageFaults,
            ScheduledMoves, Protocol):
    """All of the control plane's state (spotrun.adapters.dynamo.DynamoStore)."""


class Compute(Protocol):
    """The instances workers run on (spotrun.adapters.ec2.Ec2Compute)."""

    def launch(self, request: LaunchRequest) -> LaunchResult: ...

    def terminate(self, instance_ids: Sequence[str]) -> None: ...

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Each instance's state and last state reason; an instance EC2 no longer knows is `GONE`."""
        ...

    def managed_instances(self) -> list[ManagedInstance]: ...


class Bus(Protocol):
    """Control messages to the scheduler, timeline events to subscribers (spotrun.adapters.sns.SnsBus)."""

    def send(self, message: ControlMessage) -> None: ...

    def notify(self, events: Sequence[TimelineEvent]) -> None: ...


class Blobs(Protocol):
    """Users' files: presigned transfers and listings (spotrun.adapters.s3.S3Blobs)."""

    def upload_url(self, key: str) -> str: ...

    def download_url(self, key: str) -> str: ...

    def keys(self, prefix: str, limit: int = 1000) -> list[dict[str, Any]]: ...


class Credentials(Protocol):
    """Task-role sessions for one attempt (spotrun.adapters.sts.TaskCredentials)."""

    def issue(self, session_name: str, tags: dict[str, str]) -> dict[str, str]: ...


class PageKey(Protocol):
    """The key the API seals its page tokens with (spotrun.adapters.secrets.SecretKey)."""

    def key(self) -> bytes: ...


class SpotPrices(Protocol):
    """Current spot prices per pool (spotrun.adapters.ec2.Ec2SpotPrices)."""

    def prices(self, instance_types: Sequence[str], now: datetime) -> dict[str, float]: ...


class TaskLogs(Protocol):
    """Each attempt's log: one stream per attempt in the deployment's log group, written by its agent
    (spotrun.adapters.logs.CloudWatchTaskLogs)."""

    def open_stream(self, job_id: str, index: int, attempt: int) -> None:
        """Create the attempt's stream (the agent may only write to it); nothing happens if it exists."""
        ...

    def read(self, job_id: str, index: int, attempt: int, token: str | None, limit: int,
             newest: bool = False) -> tuple[list[LogLine], str]:
        """Lines oldest first from `token` on (from the start, or the newest `limit` lines when `newest`),
        and the token that reads on after them. A stream not written yet reads as no lines."""
        ...
