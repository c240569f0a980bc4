"""What a worker asks of the control plane, answered for the instance the request came from.

A worker's own credentials (the instance role) reach nothing but these use cases; each one finds
the attempt the instance serves from the instance's WORKER item (written by the scheduler), never
from the request, and checks the request names that attempt. Everything that writes outside the
task's own items (the job's counts, the pool's statistics, the timeline, another task's admission)
happens here; the worker itself gets credentials of the task role, tagged for its one task
(`spotrun.access`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spotrun import sweeps
from spotrun.access import session_name, session_tags
from spotrun.attempts import ClaimRefused, claim, commit_checkpoint
from spotrun.control import ControlPlane
from spotrun.domain.lifecycle import TaskChange
from spotrun.domain.messages import AttemptRef
from spotrun.domain.model import Checkpoint, Desired, Market, TaskState, TimelineEvent, Worker
from spotrun.domain.spec import agent_form, from_stored

log = logging.getLogger(__name__)
REUSE_CANDIDATES = 10


class NotServing(Exception):
    """The instance serves no attempt, or not the one the request names (404/409 to the worker)."""


@dataclass(frozen=True)
class Assignment:
    """The attempt an instance serves, what it runs, and credentials confined to its task."""

    ref: AttemptRef
    kind: str
    spec: dict[str, Any]
    credentials: dict[str, str] | None


def serving(cp: ControlPlane, instance_id: str, attempt: int | None = None) -> AttemptRef:
    """The attempt this instance serves (and, when the request names one, it must be that one)."""
    worker = cp.store.worker(instance_id)
    if worker is None:
        raise NotServing(f"no attempt names instance {instance_id}")
    if attempt is not None and attempt != worker.attempt:
        raise NotServing(f"instance {instance_id} serves attempt {worker.attempt} of task {worker.index}, "
                         f"not attempt {attempt}")
    return AttemptRef(job_id=worker.job_id, index=worker.index, attempt=worker.attempt, instance_id=instance_id,
                      rank=worker.rank)


def assignment(cp: ControlPlane, instance_id: str) -> Assignment:
    """The instance's attempt with fresh task credentials (also how a worker renews them)."""
    ref = serving(cp, instance_id)
    job = cp.store.get_job(ref.job_id)
    task = cp.store.get_task(ref.job_id, ref.index)
    if job is None or task is None:
        raise NotServing(f"task {ref.job_id}/{ref.index} no longer exists")
    credentials = None
    if cp.credentials is not None:
        credentials = cp.credentials.issue(session_name(ref.job_id, ref.index, ref.attempt),
                                           session_tags(ref.job_id, ref.index, task.kind))
    return Assignment(ref, task.kind, agent_form(job.spec), credentials)


def claim_attempt(cp: ControlPlane, instance_id: str, attempt: int) -> float | None:
    """LAUNCHING -> RUNNING for the instance's attempt (ClaimRefused when it no longer owns its task).

    The attempt's log stream is opened first, so it exists from the moment the attempt runs: the
    agent's task credentials may put events into it but not create streams. Answers the seconds since
    an interruption ended the previous attempt when this one runs again now (it has no checkpoint to
    restore first; with one, `restored` answers them)."""
    ref = serving(cp, instance_id, attempt)
    if cp.logs is not None:
        cp.logs.open_stream(ref.job_id, ref.index, ref.attempt)
    task = claim(cp, ref)
    return None if task.checkpoint is not None else since_interruption(cp, ref)


def since_interruption(cp: ControlPlane, ref: AttemptRef) -> float | None:
    """Seconds from the interruption that ended the attempt before `ref` (when one did) until now."""
    before = [a for a in cp.store.attempts(ref.job_id, ref.index)
              if a.number < ref.attempt and a.outcome != "not_launched"]
    if not before:
        return None
    previous = max(before, key=lambda a: a.number)
    if previous.outcome != "interrupted" or previous.ended_at is None:
        return None
    return max(0.0, (cp.clock() - previous.ended_at).total_seconds())


def commit(cp: ControlPlane, instance_id: str, attempt: int, seq: int, size_bytes: int, method: str,
           committed_at: datetime, predicted_final_seconds: float | None = None, final_fits_warning: bool | None = None,
           capture_bytes_per_second: float | None = None, upload_bytes_per_second: float | None = None,
           final_budget_seconds: float | None = None, ranks: int = 1) -> bool:
    """Move the task's pointer to a checkpoint the worker uploaded under its own prefix, with what the
    agent measured and predicts of its final checkpoint.

    A gang's checkpoint is committed by its rank 0 only, once its manifest names a part of every rank
    (`ranks`, which must be the gang's size): a partial gang checkpoint is never committed."""
    ref = serving(cp, instance_id, attempt)
    task = cp.store.get_task(ref.job_id, ref.index)
    nodes = task.nodes if task is not None else 1
    if nodes > 1 and ref.rank != 0:
        raise NotServing(f"rank {ref.rank} of a gang does not commit checkpoints: its rank 0 does")
    if ranks != nodes:
        log.warning("checkpoint %s of %s/%s names %d ranks, the task runs on %d: not committed", seq, ref.job_id,
                    ref.index, ranks, nodes)
        return False
    key = checkpoint_key(ref.job_id, ref.index, seq)
    return commit_checkpoint(cp, ref, Checkpoint(
        seq=seq, key=key, attempt=ref.attempt, size_bytes=size_bytes, committed_at=committed_at, method=method,
        predicted_final_seconds=predicted_final_seconds, final_fits_warning=final_fits_warning,
        capture_bytes_per_second=capture_bytes_per_second, upload_bytes_per_second=upload_bytes_per_second,
        final_budget_seconds=final_budget_seconds, ranks=ranks))


def checkpoint_key(job_id: str, index: int, seq: int) -> str:
    """Where checkpoint `seq` of a task lives: the only prefix its worker may write checkpoints to."""
    return f"checkpoints/{job_id}/{index}/{seq:08d}"


def restored(cp: ControlPlane, instance_id: str, attempt: int, seq: int, from_attempt: int) -> float | None:
    """Note the restore on the timeline; answers the seconds since an interruption ended the previous
    attempt (the task runs again from here), if one did."""
    ref = serving(cp, instance_id, attempt)
    task = cp.store.get_task(ref.job_id, ref.index)
    if task is None or task.checkpoint is None or task.checkpoint.seq < seq:
        raise NotServing(f"task {ref.job_id}/{ref.index} has no committed checkpoint {seq}")
    cp.store.add_event(TimelineEvent(
        ref.job_id, cp.clock(), "CheckpointRestored", f"{ref.index}-{ref.attempt}-restored-{seq}",
        ref.index, ref.attempt, {"seq": seq, "from_attempt": from_attempt},
    ))
    cp.store.record_restore(ref.job_id, ref.index, ref.attempt, seq, from_attempt)
    return since_interruption(cp, ref)


@dataclass(frozen=True)
class NextTask:
    worker: Worker | None  # the instance's next attempt, if it got one
    ask_again: bool = False  # the attempt just reported has not been ended yet


def next_task(cp: ControlPlane, instance_id: str, attempt: int) -> NextTask:
    """Instance reuse: admit the job's next queued task to this instance instead of terminating it.

    Only once the finisher has ended the attempt just reported (so the job's concurrency count has
    room again): until then the worker is told to ask again. The admission is the scheduler's own
    guarded transaction; a task the scheduler took first is skipped.
    """
    ref = serving(cp, instance_id, attempt)
    done = cp.store.get_task(ref.job_id, ref.index)
    if done is not None and done.attempt == ref.attempt and done.state in (TaskState.LAUNCHING, TaskState.RUNNING):
        return NextTask(None, ask_again=True)
    if done is None or done.attempt != ref.attempt:
        return NextTask(None)
    job = cp.store.get_job(ref.job_id)
    if job is None or job.desired != Desired.RUN or done.pool is None:
        return NextTask(None)
    max_active = from_stored(job.spec).max_concurrency
    now = cp.clock()
    candidates = cp.store.tasks_in_state(ref.job_id, TaskState.QUEUED, REUSE_CANDIDATES)
    if not candidates and job.pending > 0:  # a big sweep: its next task is stored as it is taken
        candidates = sweeps.materialize(cp, job, 1)
    for candidate in candidates:
        if (candidate.desired == Desired.CANCEL or candidate.kind != "task" or done.pool in candidate.avoid_pools
                or candidate.nodes > 1):  # a gang needs all its instances at once: the scheduler launches them
            continue
        change = TaskChange(candidate, TaskState.LAUNCHING, "TaskLaunching", new_attempt=True,
                            set_fields={"pool": done.pool, "market": done.market or Market.SPOT,
                                        "price_per_hour": done.price_per_hour},
                            remove_fields=("draining_attempt",))
        if not cp.store.apply_many([change], now, {"reused_instance": instance_id}, {"max_active": max_active}):
            continue
        next_attempt = candidate.attempt + 1  # its attempt record came with the move
        cp.store.bind_instance(candidate.job_id, candidate.index, next_attempt, instance_id, done.pool, now)
        log.info("instance %s reused for task %s attempt %s", instance_id, candidate.index, next_attempt)
        return NextTask(cp.store.worker(instance_id))
    return NextTask(None)


__all__ = ["Assignment", "ClaimRefused", "NotServing", "assignment", "checkpoint_key", "claim_attempt", "commit",
           "NextTask", "next_task", "restored", "serving", "since_interruption"]
