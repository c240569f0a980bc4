"""An attempt's life after launch: claim, checkpoints, completion, interruptions, loss (its liveness is the
agent's own beat, `TaskStore.record_beat`, which the reaper reads).

Each use case reads the task, asks the pure lifecycle what to do, and writes it guarded by the
state and attempt it read; on a lost race it reads again, so duplicates and stragglers change
nothing and a redelivered message repairs what a crash left half done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spotrun.bookkeeping import notify_change, refresh_state
from spotrun.control import ControlPlane
from spotrun.domain.interruptions import (
    Action,
    InstanceEvent,
    Reaction,
    ScheduledMove,
    lost_instance,
    move_time,
    reaction,
)
from spotrun.domain.launches import GONE
from spotrun.domain.lifecycle import (
    TaskChange,
    after_completion,
    ended,
    environment_fault,
    last_sign_of_life,
    run_seconds,
)
from spotrun.domain.messages import AttemptRef, CompletionReport, ControlMessage
from spotrun.domain.model import (
    ACTIVE_STATES,
    Checkpoint,
    Job,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
    Worker,
    task_instances,
)
from spotrun.domain.spec import from_stored
from spotrun.images import note_image_fault
from spotrun.resources import MessageType
from spotrun.scheduling import ScheduleReport, replace_task

log = logging.getLogger(__name__)
RETRIES_ON_RACE = 4


class ClaimRefused(Exception):
    """The attempt does not own its task (superseded, cancelled, or never launched)."""


def claim(cp: ControlPlane, ref: AttemptRef) -> Task:
    """The agent takes its task: LAUNCHING -> RUNNING, fenced by the attempt number (a gang's rank 0, for all
    its ranks)."""
    if ref.rank > 0:
        raise ClaimRefused(f"rank {ref.rank} of a gang does not claim its task: its rank 0 does")
    for _ in range(RETRIES_ON_RACE):
        task = cp.store.get_task(ref.job_id, ref.index)
        if task is None:
            raise ClaimRefused(f"no task {ref.job_id}/{ref.index}")
        if task.attempt != ref.attempt:
            raise ClaimRefused(f"attempt {ref.attempt} was superseded by attempt {task.attempt}")
        if task.state == TaskState.RUNNING:
            return task  # a retried claim
        if task.state != TaskState.LAUNCHING:
            raise ClaimRefused(f"task is {task.state}")
        change = TaskChange(task, TaskState.RUNNING, "TaskStarted", set_fields={"instance_id": ref.instance_id},
                            remove_fields=("draining_attempt",))
        # A gang's start names every rank's instance (rank 0's claim speaks for all of them).
        started = {"instance": ref.instance_id, **({"ranks": list(task.gang_instances)} if task.gang_instances else {})}
        if cp.store.apply(change, cp.clock(), started):
            refresh_state(cp, ref.job_id)
            claimed = cp.store.get_task(ref.job_id, ref.index)
            if claimed is not None:
                return claimed
    raise ClaimRefused("the task kept changing while it was claimed")


def commit_checkpoint(cp: ControlPlane, ref: AttemptRef, checkpoint: Checkpoint) -> bool:
    """Move the task's pointer to a checkpoint whose files and manifest are already in S3."""
    committed = bool(cp.store.commit_checkpoint(ref.job_id, ref.index, checkpoint))
    if committed and checkpoint.upload_bytes_per_second and checkpoint.size_bytes:
        # The pool's measured bandwidth, which the broker weighs when a final checkpoint must fit a warning.
        task = cp.store.get_task(ref.job_id, ref.index)
        if task is not None and task.pool:
            cp.store.record_pool_upload(task.pool, checkpoint.size_bytes,
                                        checkpoint.size_bytes / checkpoint.upload_bytes_per_second)
    if committed:
        cp.store.add_event(TimelineEvent(
            ref.job_id, checkpoint.committed_at, "CheckpointCommitted", f"{ref.index}-ckpt-{checkpoint.seq}",
            ref.index, ref.attempt, {"seq": checkpoint.seq, "bytes": checkpoint.size_bytes, "method": checkpoint.method,
                                     **_final_detail(checkpoint),
                                     **({"ranks": checkpoint.ranks} if checkpoint.ranks > 1 else {})},
        ))
    return committed


def _final_detail(checkpoint: Checkpoint) -> dict[str, object]:
    """The final checkpoint's prediction, for the timeline: the note users read and its figures."""
    if checkpoint.final_note is None:
        return {}
    return {"final_checkpoint": checkpoint.final_note, "predicted_final_seconds": checkpoint.predicted_final_seconds,
            "final_fits_warning": checkpoint.final_fits_warning}


@dataclass
class Completion:
    change: TaskChange | None
    applied: bool
    task: Task | None = None
    image_fault_noted: bool = False  # the report's image fault was noted now, for the first time


def complete(cp: ControlPlane, report: CompletionReport) -> Completion:
    """Classify an attempt's end by scope and move the task; stale or repeated reports change nothing.

    A gang's outcome is its rank 0's report; another rank's report is noted (`_rank_ended`)."""
    if report.rank > 0:
        return _rank_ended(cp, report)
    for _ in range(RETRIES_ON_RACE):
        task = cp.store.get_task(report.job_id, report.index)
        job = cp.store.get_job(report.job_id)
        if task is None or job is None:
            log.warning("completion for unknown task %s/%s dropped", report.job_id, report.index)
            return Completion(None, False)
        spec = from_stored(job.spec)
        change = after_completion(task, report, spec.retries)
        if change is None:
            noted = False
            if report.attempt == task.attempt and task.state not in ACTIVE_STATES:
                # A redelivery: what the first delivery may not have finished is finished now.
                noted = report.fault == "image" and note_image_fault(cp, report, spec.checkpoint.method)
                _finish_follow_ups(cp, job, task, report)
            _close_superseded_attempt(cp, task, report)
            return Completion(None, False, task, image_fault_noted=noted)
        if cp.store.apply(change, cp.clock(), _report_detail(report)):
            noted = report.fault == "image" and note_image_fault(cp, report, spec.checkpoint.method)
            _after_change(cp, job, change, terminate=None if report.keep_instance else (
                          task_instances(task) if task.nodes > 1 else (report.instance_id,)),
                          instance_kept=report.keep_instance)
            return Completion(change, True, cp.store.get_task(report.job_id, report.index), image_fault_noted=noted)
    raise RuntimeError(f"task {report.job_id}/{report.index} kept changing; the message will be retried")


def _rank_ended(cp: ControlPlane, report: CompletionReport) -> Completion:
    """The report of a gang's rank other than 0: on the timeline, once. Its program's result and its final
    checkpoint part are rank 0's to report (the gang ends together); an agent that failed on its own (an
    environment fault, a failed staging) takes the gang's attempt with it, back to its last checkpoint."""
    task = cp.store.get_task(report.job_id, report.index)
    if task is None:
        return Completion(None, False)
    cp.store.add_event(TimelineEvent(
        report.job_id, cp.clock(), "RankEnded", f"{report.index}-{report.attempt}-rank-{report.rank}-ended",
        report.index, report.attempt, {"rank": report.rank, "instance": report.instance_id, **_report_detail(report)},
    ))
    owns = task.attempt == report.attempt and task.state in ACTIVE_STATES
    if owns and report.outcome not in ("completed", "interrupted", "cancelled", "suspended"):
        lost = lose_attempt(cp, task, f"rank {report.rank} of the gang: {report.outcome}: {report.reason}")
        return Completion(None, lost, cp.store.get_task(report.job_id, report.index))
    return Completion(None, False, task)


def _report_detail(report: CompletionReport) -> dict[str, object]:
    detail: dict[str, object] = {"outcome": report.outcome}
    if report.unsaved_seconds is not None:
        detail["unsaved_seconds"] = round(report.unsaved_seconds, 3)
    if report.program is not None:
        detail.update(exit_code=report.program.exit_code, exec_seconds=round(report.program.exec_seconds, 3))
    if report.missing_outputs:
        detail["missing_outputs"] = list(report.missing_outputs)
    if report.fault is not None:
        detail.update(fault=report.fault, image_id=report.image_id)
    return detail


def _close_superseded_attempt(cp: ControlPlane, task: Task, report: CompletionReport) -> None:
    """The report of an attempt that no longer owns its task (e.g. the interrupted one after its final checkpoint).
    A gang's old instances end with it: the handover is done, nothing of the old gang bills on."""
    if report.attempt < task.attempt and task.nodes > 1:
        old = [a for a in cp.store.attempts(task.job_id, task.index) if a.number == report.attempt]
        if old and old[0].gang_instances:
            cp.compute.terminate(list(old[0].gang_instances))
    if report.attempt < task.attempt and cp.store.record_attempt_end(
        task.job_id, task.index, report.attempt, report.outcome, report.scope,
        report.program.exec_seconds if report.program else 0.0, cp.clock(),
    ):
        cp.store.add_event(TimelineEvent(
            task.job_id, cp.clock(), "AttemptEnded", f"{task.index}-{report.attempt}-ended", task.index, report.attempt,
            {"outcome": report.outcome, "checkpoint_seq": report.checkpoint_seq,
             **({"unsaved_seconds": round(report.unsaved_seconds, 3)} if report.unsaved_seconds is not None else {})},
        ))


def _finish_follow_ups(cp: ControlPlane, job: Job, task: Task, report: CompletionReport) -> None:
    """The report's own move is already applied (by an earlier delivery, or by this one when the answer
    to its write was lost), but the invocation that applied it may have died before the follow-ups:
    redo the ones that can be lost that way. Each is idempotent, so a plain duplicate costs a few reads."""
    if task.state == TaskState.QUEUED:
        cp.bus.send(ControlMessage(type=MessageType.TASKS_RUNNABLE, job_id=job.job_id, indexes=[task.index],
                                   reason="repair"))
    elif task.state in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
        _maybe_release_combine(cp, job.job_id, cp.clock())
    if not report.keep_instance:
        cp.compute.terminate(list(task_instances(task)) if task.nodes > 1 else [report.instance_id])
    refresh_state(cp, job.job_id)


def release_combine_if_due(cp: ControlPlane, job: Job) -> None:
    """For the reaper: queue (or cancel) a combine task whose release was lost with a crashed invocation."""
    if job.has_combine:
        _maybe_release_combine(cp, job.job_id, cp.clock())


def _after_change(cp: ControlPlane, job: Job, change: TaskChange, terminate: tuple[str, ...] | None = None,
                  instance_kept: bool = False) -> None:
    """What follows a task move: free the instance, wake the scheduler, start the combine, refresh the job.

    An agent that keeps its instance takes the job's next queued task itself: waking the scheduler
    would launch a new instance for that task first and defeat the reuse. Should the agent find
    nothing it can take, it ends its instance and the reaper's reconcile (every minute) admits
    whatever is still queued.
    """
    now = cp.clock()
    to = change.to_state
    if terminate and change.from_state in ACTIVE_STATES and to not in ACTIVE_STATES:
        cp.compute.terminate(list(terminate))
    if to == TaskState.QUEUED:
        cp.bus.send(ControlMessage(type=MessageType.TASKS_RUNNABLE, job_id=job.job_id, indexes=[change.task.index],
                                   reason=change.event))
    elif change.from_state in ACTIVE_STATES and to not in ACTIVE_STATES and not instance_kept:
        cp.bus.send(ControlMessage(type=MessageType.CAPACITY_FREED, job_id=job.job_id))
    if to in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
        _maybe_release_combine(cp, job.job_id, now)
    refresh_state(cp, job.job_id)
    notify_change(cp, change, now)


def _maybe_release_combine(cp: ControlPlane, job_id: str, now: datetime) -> None:
    """Queue the combine task once every task succeeded; cancel it when that can no longer happen."""
    job = cp.store.get_job(job_id)
    if job is None or job.combine_index is None:
        return
    combine = cp.store.get_task(job_id, job.combine_index)
    if combine is None or combine.state != TaskState.WAITING:
        return
    counts = job.counts
    succeeded = counts.get(TaskState.SUCCEEDED, 0)
    unfinished = sum(counts.get(s, 0) for s in (TaskState.QUEUED, TaskState.LAUNCHING, TaskState.RUNNING,
                                                  TaskState.SUSPENDED))
    allow_partial = bool((job.spec.get("combine") or {}).get("allow_partial"))
    if succeeded == job.task_count or (allow_partial and unfinished == 0):
        if cp.store.apply(TaskChange(combine, TaskState.QUEUED, "CombineQueued"), now):
            cp.bus.send(ControlMessage(type=MessageType.TASKS_RUNNABLE, job_id=job_id, indexes=[combine.index]))
    elif not allow_partial and (counts.get(TaskState.FAILED, 0) or counts.get(TaskState.CANCELLED, 0)):
        why = _what_did_not_succeed(cp, job)
        if cp.store.apply(TaskChange(combine, TaskState.CANCELLED, "CombineCancelled",
                                     reason=f"{why}: the combine step does not allow partial results"), now):
            cp.store.set_job_reason(job_id, f"the combine step did not run: {why} (combine.allow_partial is false); "
                                            "the job ends when its other tasks end")


def _what_did_not_succeed(cp: ControlPlane, job: Job) -> str:
    """'task 3 was cancelled', 'tasks 1, 4 failed', ...: the tasks that keep the combine step from running."""
    parts = []
    for state, verb in ((TaskState.FAILED, "failed"), (TaskState.CANCELLED, "cancelled")):
        found = [t.index for t in cp.store.tasks_in_state(job.job_id, state, 10) if t.kind == "task"]
        if found:
            shown = ", ".join(map(str, found[:5])) + (" and more" if len(found) > 5 else "")
            parts.append(f"task {shown} was {verb}" if len(found) == 1 else f"tasks {shown} were {verb}")
    return " and ".join(parts) or "a task did not succeed"


@dataclass
class InterruptionOutcome:
    replaced: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    checkpoint_requested: list[str] = field(default_factory=list)
    move_scheduled: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    interrupted_pools: dict[str, int] = field(default_factory=dict)  # attempts a reclaim or a due move took, per pool
    launches: ScheduleReport = field(default_factory=ScheduleReport)  # the replacements' launches


def handle_instance_event(cp: ControlPlane, event: InstanceEvent) -> InterruptionOutcome:
    """Carry out the one action the pure classifier chose for an instance event."""
    outcome = InterruptionOutcome()
    if event.action == Action.CANCEL_MOVE:  # nothing to move for a closed change: only forget a pending move
        for instance_id in event.instance_ids:
            cp.store.forget_move(instance_id)
            outcome.ignored.append(instance_id)
        return outcome
    for instance_id in event.instance_ids:
        worker = cp.store.worker(instance_id)
        task = cp.store.get_task(worker.job_id, worker.index) if worker else None
        if worker is None or task is None:
            outcome.ignored.append(instance_id)  # not an instance of spotrun's, or its task is gone
            continue
        step = reaction(event.action, task, worker.attempt)
        if step == Reaction.REPLACE:
            cp.store.cool_down(worker.pool, cp.clock() + timedelta(seconds=cp.settings.cooldown_seconds),
                               "spot interruption warning", cp.clock())
            replace_task(cp, task, _of_member(event.reason, task, worker), outcome.launches)
            outcome.replaced.append(instance_id)
            outcome.interrupted_pools[worker.pool] = outcome.interrupted_pools.get(worker.pool, 0) + 1
        elif step == Reaction.MOVE:
            if _move_before_the_change(cp, task, instance_id, event, outcome.launches):
                outcome.replaced.append(instance_id)
                outcome.interrupted_pools[worker.pool] = outcome.interrupted_pools.get(worker.pool, 0) + 1
            else:
                outcome.move_scheduled.append(instance_id)
        elif step == Reaction.REQUEST_CHECKPOINT:
            cp.store.request_checkpoint(task.job_id, task.index, task.attempt, cp.clock())
            outcome.checkpoint_requested.append(instance_id)
        elif step == Reaction.LOSE_ATTEMPT:
            status = cp.compute.statuses([instance_id]).get(instance_id, GONE)
            reclaimed, reason = lost_instance(status, event.reason)
            if lose_attempt(cp, task, _of_member(reason, task, worker), reclaimed=reclaimed):
                outcome.requeued.append(instance_id)
                if reclaimed:  # a reclaim without a warning; any other loss is an environment fault
                    outcome.interrupted_pools[worker.pool] = outcome.interrupted_pools.get(worker.pool, 0) + 1
        elif step == Reaction.END_SUPERSEDED_ATTEMPT and worker.rank > 0:
            # A rank of an old gang is gone: its rank 0 may still commit the final checkpoint, and its
            # report (or its own instance's end) is the gang's handover.
            outcome.ignored.append(instance_id)
        elif step == Reaction.END_SUPERSEDED_ATTEMPT:
            cp.store.record_attempt_end(task.job_id, task.index, worker.attempt, "interrupted", Scope.ENVIRONMENT, 0.0,
                                        cp.clock())
            outcome.ignored.append(instance_id)
        else:
            outcome.ignored.append(instance_id)
    return outcome


def _of_member(reason: str, task: Task, worker: Worker) -> str:
    """A gang's interruption is the whole gang's: its reason names the member it came to."""
    return f"{reason}, at rank {worker.rank} of the gang ({worker.instance_id})" if task.nodes > 1 else reason


def _move_before_the_change(cp: ControlPlane, task: Task, instance_id: str, event: InstanceEvent,
                            launches: ScheduleReport) -> bool:
    """Move the task off an instance a scheduled change will take, `scheduled_move_lead_seconds` before the
    change: at once when that time has come (True), else on the timeline and for the reaper to carry out
    then (`move_due_tasks`). The pool is not cooled down: the change is the instance's, not the pool's."""
    now = cp.clock()
    move_at = move_time(event.not_before, now, timedelta(seconds=cp.settings.scheduled_move_lead_seconds))
    if move_at <= now:
        replace_task(cp, task, event.reason, launches)
        cp.store.forget_move(instance_id)
        return True
    cp.store.schedule_move(ScheduledMove(instance_id, move_at, event.not_before, event.reason))
    cp.store.add_event(TimelineEvent(
        task.job_id, now, "MoveScheduled", f"{task.index}-{task.admissions}-move-{instance_id}-{move_at.timestamp()}",
        task.index, task.attempt, {"instance": instance_id, "move_at": move_at.isoformat(), "reason": event.reason,
                                   **({"starts_at": event.not_before.isoformat()} if event.not_before else {})},
    ))
    return False


def move_due_tasks(cp: ControlPlane, launches: ScheduleReport | None = None,
                   interrupted_pools: dict[str, int] | None = None) -> list[str]:
    """For the reaper: carry out the moves whose time has come (the task's replacement starts, its attempt
    takes a final checkpoint and hands over, as after a spot warning). A move whose instance serves no
    attempt that owns its task any more is forgotten; one that found no capacity is tried again."""
    moved = []
    now = cp.clock()
    for move in cp.store.scheduled_moves(500):
        if move.move_at > now:
            break
        worker = cp.store.worker(move.instance_id)
        task = cp.store.get_task(worker.job_id, worker.index) if worker else None
        if worker is None or task is None or reaction(Action.MOVE, task, worker.attempt) != Reaction.MOVE:
            cp.store.forget_move(move.instance_id)
            continue
        replace_task(cp, task, move.reason, launches or ScheduleReport())
        after = cp.store.get_task(task.job_id, task.index)
        if after is None or after.attempt != worker.attempt:
            cp.store.forget_move(move.instance_id)
            moved.append(f"{task.job_id}/{task.index}#{worker.attempt}")
            if interrupted_pools is not None:  # its instance's pool lost an attempt to the change
                interrupted_pools[worker.pool] = interrupted_pools.get(worker.pool, 0) + 1
    return moved


def lose_attempt(cp: ControlPlane, task: Task, reason: str, reclaimed: bool = False) -> bool:
    """The attempt's instance is gone without a report: retried from the checkpoint.

    A spot reclaim (EC2 says so: `domain.interruptions.lost_instance`) is what a warned one is, whichever
    signal reported it: an interruption, not a use of the environment budget, and its pool cools down.
    Anything else is an environment fault.
    """
    job = cp.store.get_job(task.job_id)
    if job is None:
        return False
    retries = from_stored(job.spec).retries
    # it ran, as far as anyone can tell, until its last sign of life
    end = ended(task, "interrupted" if reclaimed else "lost", Scope.ENVIRONMENT,
                exec_seconds=run_seconds(task, last_sign_of_life(task) or cp.clock()))
    change = environment_fault(task, reason, retries, end, reclaimed=reclaimed)
    if reclaimed and task.pool:
        cp.store.cool_down(task.pool, cp.clock() + timedelta(seconds=cp.settings.cooldown_seconds), "spot reclaim",
                           cp.clock())
    if cp.store.apply(change, cp.clock(), {"reason": reason}):
        _after_change(cp, job, change, terminate=task_instances(task))
        return True
    return False
