"""Use cases behind the API: submit, inspect and steer jobs. Handlers call exactly one of these."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from spotrun import resources, scheduling, sweeps
from spotrun.bookkeeping import notify
from spotrun.control import ControlPlane
from spotrun.domain import broker, pages
from spotrun.domain.accounting import job_statistics
from spotrun.domain.messages import ControlMessage
from spotrun.domain.model import (
    FINISHED_JOB_STATES,
    TERMINAL_STATES,
    Attempt,
    Desired,
    Job,
    JobState,
    LogLine,
    Task,
    TaskState,
    TimelineEvent,
)
from spotrun.domain.spec import JobSpec, SpecError, check_stored_size, from_stored, parse_spec, stored_form
from spotrun.domain.waiting import WaitFacts, Waiting, why_waiting
from spotrun.ports import Blobs
from spotrun.resources import MessageType


class NotFound(Exception):
    """No such job or task."""


class Conflict(Exception):
    """The action is not allowed in the current state; the message says why."""


def new_job_id(now_ns: int | None = None) -> str:
    """Time-ordered, unguessable job ids: 'j-' + 12 hex of milliseconds + 8 random hex."""
    millis = (now_ns or time.time_ns()) // 1_000_000
    return f"j-{millis:012x}{os.urandom(4).hex()}"


def idempotent_job_id(owner: str, key: str) -> str:
    digest = hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()
    return f"j-{digest[:20]}"


def submit_job(cp: ControlPlane, document: Any, owner: str = "",
               idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Validate a decoded job document (JSON or YAML), then store and schedule it as `submit_spec` does."""
    return _store(cp, parse_spec(document), owner, idempotency_key)


def submit_spec(cp: ControlPlane, spec: JobSpec, owner: str = "",
                idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Store a job with all its tasks, then ask for it to be scheduled.

    Returns the job and whether it was created now (False: the idempotency key was seen before).
    The spec was validated field by field (by the API's resolver); here it is sized for the store.
    """
    check_stored_size(spec)
    return _store(cp, spec, owner, idempotency_key)


def _store(cp: ControlPlane, spec: JobSpec, owner: str, idempotency_key: str | None) -> tuple[Job, bool]:
    cap = min(cp.settings.pool_max_instances, cp.settings.account_max_instances)
    if spec.nodes > cap:  # a gang is admitted whole in one pool: one bigger than a pool's cap would wait forever
        raise SpecError([{"field": "nodes", "problem": f"{spec.nodes} instances cannot start together in this "
                                                       f"deployment: at most {cap} run in one pool"}])
    now = cp.clock()
    job_id = idempotent_job_id(owner, idempotency_key) if idempotency_key else new_job_id()
    count = spec.task_count
    # A big sweep by count stores its first tasks now and the others as they are admitted (`sweeps`).
    materialized = sweeps.stored_at_submit(count, spec.parameters is None)
    tasks: list[dict[str, Any]] = [
        sweeps.new_task(job_id, i, spec.parameters[i] if spec.parameters is not None else None, spec.nodes)
        for i in range(count if materialized is None else materialized)
    ]
    counts = {TaskState.QUEUED.value: count}
    if spec.combine is not None:
        tasks.append({"job_id": job_id, "index": count, "kind": "combine", "state": TaskState.WAITING})
        counts[TaskState.WAITING.value] = 1
    job = Job(
        job_id=job_id, name=spec.name, spec=stored_form(spec), state=JobState.QUEUED, task_count=count,
        has_combine=spec.combine is not None, counts=counts, active=0, desired=Desired.RUN,
        created_at=now, updated_at=now, owner=owner, materialized=materialized,
    )
    event = TimelineEvent(job_id, now, "JobSubmitted", "job-submitted", None, None,
                          {"tasks": count, "name": spec.name, **({"by": owner} if owner else {})})
    created = cp.store.create_job(job, tasks, event)
    if not created:
        existing = cp.store.get_job(job_id)
        assert existing is not None
        if existing.state == JobState.QUEUED and existing.active == 0 and existing.desired == Desired.RUN:
            # A retried submit (idempotency key) whose first try stored the job but died before its
            # wake-up: wake the scheduler again (its reconcile is idempotent) instead of leaving it to
            # the reaper's next sweep.
            cp.bus.send(ControlMessage(type=MessageType.JOB_SUBMITTED, job_id=job_id))
        return existing, False
    cp.bus.send(ControlMessage(type=MessageType.JOB_SUBMITTED, job_id=job_id))
    notify(cp, [event])
    return job, True


def get_job(cp: ControlPlane, job_id: str) -> Job:
    job = cp.store.get_job(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def job_status(cp: ControlPlane, job_id: str) -> tuple[Job, Waiting | None]:
    """A job, and why its queued tasks wait (`domain.waiting`) when some do: what the API's job view and
    `spotrun status` say."""
    job = get_job(cp, job_id)
    queued = job.counts.get(TaskState.QUEUED, 0)
    if not queued or job.state in FINISHED_JOB_STATES or job.desired != Desired.RUN:
        return job, None
    spec = from_stored(job.spec)
    now = cp.clock()
    states = scheduling.pool_states(cp, now, priced=False)  # which pools hold the tasks back needs no prices
    decision = broker.rank_pools(spec.resources, states, now)
    usable = {c.pool.key for c in decision.choices} | {
        pool.key for pool, why in decision.rejected if why.startswith(("cooling down", "full"))}
    stats = cp.store.pool_stats(sorted(usable))
    sample = cp.store.tasks_in_state(job_id, TaskState.QUEUED, 10)
    deadline = None
    if spec.deadline is not None:  # the scheduler's own last decision (the API reads no market prices)
        deadline = job.policy_note or "not decided yet: the scheduler decides when a pool can take a task"
    reaper = resources.function("reaper").schedule_minutes or 1
    facts = WaitFacts(
        queued=queued, active=job.active, max_concurrency=spec.max_concurrency, account_active=cp.store.account_active(),
        account_cap=cp.settings.account_max_instances, pools=[s for s in states if s.pool.key in usable],
        cooldown_reasons={key: (s.cooldown_reason, s.cooled_at) for key, s in stats.items()},
        faults_in_a_row=max((t.consecutive_environment_failures for t in sample), default=0),
        on_demand_after=scheduling.ON_DEMAND_AFTER_FAULTS, sweep_every=timedelta(minutes=reaper),
        deadline_policy=deadline,
    )
    return job, why_waiting(facts, now)


def get_task(cp: ControlPlane, job_id: str, index: int) -> Task:
    task = cp.store.get_task(job_id, index)
    if task is None:  # not stored yet (a big sweep's pending task), or no such task
        task = get_job(cp, job_id).pending_task(index)
    if task is None:
        raise NotFound(f"job {job_id} has no task {index}")
    return task


@dataclass(frozen=True)
class Action:
    desired: Desired
    allowed_from: tuple[Desired, ...]
    verb: str


ACTIONS = {
    "cancel": Action(Desired.CANCEL, (Desired.RUN, Desired.SUSPEND), "cancelled"),
    "suspend": Action(Desired.SUSPEND, (Desired.RUN,), "suspended"),
    "resume": Action(Desired.RUN, (Desired.SUSPEND,), "resumed"),
}


def control_job(cp: ControlPlane, job_id: str, action_name: str, by: str = "") -> Job:
    """Cancel (kill), suspend or resume a job: record the wish (and who asked: `by`) on the timeline,
    let the scheduler carry it out."""
    action = ACTIONS[action_name]
    job = get_job(cp, job_id)
    if job.state in FINISHED_JOB_STATES:
        raise Conflict(f"job {job_id} is {job.state}; it cannot be {action.verb}")
    if job.desired == action.desired and action.desired != Desired.RUN:
        return job  # asking twice is fine
    if action.desired == Desired.RUN and job.desired == Desired.RUN:
        raise Conflict(f"job {job_id} is not suspended; it cannot be resumed")
    if job.desired not in action.allowed_from:
        raise Conflict(f"job {job_id} is being {ACTIONS_BY_DESIRED[job.desired]}; it cannot be {action.verb} now")
    now = cp.clock()
    if not cp.store.set_job_desired(job_id, action.desired, action.allowed_from, now):
        raise Conflict(f"job {job_id} changed while it was being {action.verb}; try again")
    event = TimelineEvent(job_id, now, f"Job{action_name.title()}Requested", f"job-{action_name}-{now.timestamp()}", None, None,
                          _who(by))
    cp.store.add_event(event)
    cp.bus.send(ControlMessage(type=MessageType.JOB_CONTROL, job_id=job_id, reason=action_name))
    notify(cp, [event])
    return get_job(cp, job_id)


ACTIONS_BY_DESIRED = {Desired.CANCEL: "cancelled", Desired.SUSPEND: "suspended", Desired.RUN: "run"}


def _who(by: str) -> dict[str, Any]:
    return {"by": by} if by else {}


def cancel_task(cp: ControlPlane, job_id: str, index: int, by: str = "") -> Task:
    task = get_task(cp, job_id, index)
    if task.state in TERMINAL_STATES:
        raise Conflict(f"task {index} is {task.state}; it cannot be cancelled")
    now = cp.clock()
    job = get_job(cp, job_id)
    # A pending task (not stored yet) is stored CANCELLED at once; a stored one is marked, the scheduler moves it.
    stored_cancelled = job.is_pending(index) and sweeps.cancel_one(cp, job, index) is not None
    if not stored_cancelled and not cp.store.set_task_desired(job_id, index, Desired.CANCEL, [task.state], now):
        raise Conflict(f"task {index} changed while it was being cancelled; try again")
    cp.store.add_event(TimelineEvent(job_id, now, "TaskCancelRequested", f"{index}-cancel-{now.timestamp()}", index,
                                     task.attempt, _who(by)))
    _say_what_a_cancelled_task_means(cp, get_job(cp, job_id), task, index)
    cp.bus.send(ControlMessage(type=MessageType.JOB_CONTROL, job_id=job_id, indexes=[index], reason="cancel-task"))
    return get_task(cp, job_id, index)


def _say_what_a_cancelled_task_means(cp: ControlPlane, job: Job, task: Task, index: int) -> None:
    if job.has_combine and task.kind != "combine":  # what it means for the job, said at once
        partial = bool((job.spec.get("combine") or {}).get("allow_partial"))
        cp.store.set_job_reason(job.job_id, f"task {index} was cancelled: " + (
            "the combine step will run on the outputs of the tasks that succeed (combine.allow_partial)" if partial
            else "the combine step will not run (combine.allow_partial is false); the job ends when its other "
                 "tasks end, CANCELLED"))


MAX_CHECKPOINT_REQUESTS = 1_000  # running tasks asked at once by a job-wide "checkpoint now"


def request_checkpoint(cp: ControlPlane, job_id: str, index: int | None = None, by: str = "") -> list[int]:
    """Checkpoint now: ask a running task (or every running task of the job) for a checkpoint at once,
    without stopping. Its agent sees the request at its next control poll. Returns the tasks asked."""
    job = get_job(cp, job_id)
    if job.state in FINISHED_JOB_STATES:
        raise Conflict(f"job {job_id} is {job.state}; nothing of it runs to checkpoint")
    if job.spec.get("checkpoint", {}).get("method") == "none":
        raise Conflict(f"job {job_id} runs without checkpoints (checkpoint method none)")
    if index is not None:
        task = get_task(cp, job_id, index)
        if task.state != TaskState.RUNNING:
            raise Conflict(f"task {index} is {task.state}; only a running task can checkpoint")
        running = [task]
    else:
        running = cp.store.tasks_in_state(job_id, TaskState.RUNNING, MAX_CHECKPOINT_REQUESTS)
        if not running:
            raise Conflict(f"no task of job {job_id} is running; only a running task can checkpoint")
    now = cp.clock()
    asked = [t.index for t in running if cp.store.request_checkpoint(job_id, t.index, t.attempt, now)]
    if not asked:
        raise Conflict(f"the running tasks of job {job_id} changed meanwhile; try again")
    cp.store.add_event(TimelineEvent(job_id, now, "CheckpointRequested", f"checkpoint-{now.timestamp()}",
                                     index, running[0].attempt if index is not None else None,
                                     {**_who(by), "tasks": asked[:20], "count": len(asked)}))
    return asked


def list_jobs(cp: ControlPlane, state: str | None, limit: int, token: str | None) -> tuple[list[Job], str | None]:
    states = [JobState(state)] if state else list(JobState)
    scope = f"jobs|{state or '*'}"
    found, after = cp.store.list_jobs(states, limit, _unseal(cp, token, scope))
    return found, _seal(cp, after, scope)


def list_tasks(cp: ControlPlane, job_id: str, state: str | None, limit: int, token: str | None) -> tuple[list[Task], str | None]:
    job = get_job(cp, job_id)
    scope = f"tasks|{job_id}|{state or '*'}"
    found, after = sweeps.list_tasks(cp, job, TaskState(state) if state else None, limit, _unseal(cp, token, scope))
    return found, _seal(cp, after, scope)


def _page_key(cp: ControlPlane) -> bytes:
    if cp.page_key is None:
        raise RuntimeError("this control plane has no page-token key (the API function's has)")
    return cp.page_key.key()


def _seal(cp: ControlPlane, cursor: str | None, scope: str) -> str | None:
    """The store's cursor as a token only this API gives out, for this listing only (`spotrun.domain.pages`)."""
    return pages.seal(cursor, scope, _page_key(cp)) if cursor else None


def _unseal(cp: ControlPlane, token: str | None, scope: str) -> str | None:
    return pages.unseal(token, scope, _page_key(cp)) if token else None


def timeline(cp: ControlPlane, job_id: str, limit: int, after: str | None) -> list[TimelineEvent]:
    get_job(cp, job_id)
    return cp.store.timeline(job_id, limit, after)


def attempts(cp: ControlPlane, job_id: str, index: int) -> list[Attempt]:
    """A task's attempts, oldest first: where each ran, when, and how it ended."""
    get_task(cp, job_id, index)
    return sorted(cp.store.attempts(job_id, index), key=lambda a: a.number)


@dataclass(frozen=True)
class LogPage:
    job_id: str
    index: int
    attempt: int
    lines: list[LogLine]
    token: str  # reads on after these lines (follow: ask again with it)
    kept: bool  # whether this deployment keeps attempts' logs at all


def task_log(cp: ControlPlane, job_id: str, index: int, attempt: int | None = None, token: str | None = None,
             limit: int = 1000, newest: bool = False) -> LogPage:
    """An attempt's log (default: the task's current attempt) from `token` on, or its newest lines."""
    task = get_task(cp, job_id, index)
    number = task.attempt if attempt is None else attempt
    if attempt is not None and not 1 <= attempt <= task.attempt:
        raise NotFound(f"task {index} of {job_id} has no attempt {attempt} (it has had {task.attempt})")
    if cp.logs is None or number == 0:  # no logs kept, or the task never had an attempt
        return LogPage(job_id, index, number, [], token or "", kept=cp.logs is not None)
    lines, next_token = cp.logs.read(job_id, index, number, token, limit, newest)
    return LogPage(job_id, index, number, lines, next_token, kept=True)


def statistics(cp: ControlPlane, job_id: str) -> dict[str, Any]:
    return job_statistics(get_job(cp, job_id), cp.clock())


def upload_url(cp: ControlPlane, owner: str, filename: str) -> dict[str, str]:
    """A presigned PUT for one input file; the job then names it by its s3:// URI."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:200] or "input"
    key = f"uploads/{hashlib.sha256(owner.encode()).hexdigest()[:16]}/{os.urandom(8).hex()}/{safe}"
    return {"url": _blobs(cp).upload_url(key), "uri": f"s3://{cp.settings.bucket}/{key}"}


def output_urls(cp: ControlPlane, job_id: str) -> list[dict[str, Any]]:
    get_job(cp, job_id)
    blobs = _blobs(cp)
    return [{**o, "url": blobs.download_url(o["key"])} for o in blobs.keys(f"jobs/{job_id}/outputs/")]


def _blobs(cp: ControlPlane) -> Blobs:
    if cp.blobs is None:
        raise RuntimeError("this control plane has no bucket (the API function's has)")
    return cp.blobs
