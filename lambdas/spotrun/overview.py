"""What the console shows and does: a page of jobs, one job in detail, an attempt's log, and the
actions a person takes from there, each through the same use cases as the API (`spotrun.jobs`), so an
action from the console is recorded on the timeline like one from the API or the CLI.

Returns domain objects; `spotrun.console.views` words them and `spotrun.console.html` renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotrun import jobs
from spotrun.control import ControlPlane
from spotrun.domain.model import Attempt, Job, JobState, Task, TaskState, TimelineEvent

JOBS_PER_PAGE = 15
OPEN_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.SUSPENDED)
COUNTED_UP_TO = 100  # the filter shows how many open jobs each state has, up to this many
TASKS_SHOWN = 100  # tasks (with their attempts) in a job's detail and its chart
EVENTS_SHOWN = 40  # the newest events of the timeline
TAIL_LINES = 25  # of the focused task's log
LOG_LINES = 2_000  # in the log popup; the whole log through the CLI
GANG_CHECKPOINTS_SHOWN = 10  # the newest checkpoints of the focused gang task (its timeline's commits)


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job]
    state: JobState | None  # the filter
    token: str | None  # the next page
    open_counts: dict[str, int]  # open jobs per state, up to COUNTED_UP_TO (+1: more than that)


@dataclass(frozen=True)
class TaskHistory:
    task: Task
    attempts: list[Attempt]


@dataclass(frozen=True)
class JobDetail:
    job: Job
    tasks: list[TaskHistory]
    more_tasks: bool
    events: list[TimelineEvent]  # the newest EVENTS_SHOWN, oldest first
    stats: dict[str, Any]
    focus: TaskHistory | None  # the task whose log tail is shown
    tail: jobs.LogPage | None
    logs_kept: bool
    # The focused task's newest committed checkpoints, newest first, when it is a gang: S3 keeps only the
    # last two, so they are read back from its timeline (CheckpointCommitted: seq, bytes, ranks).
    gang_checkpoints: list[TimelineEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What an action did, said to the person who took it."""

    ok: bool
    message: str
    tasks: list[int] = field(default_factory=list)


def jobs_page(cp: ControlPlane, state: str | None, token: str | None, limit: int = JOBS_PER_PAGE) -> JobsPage:
    found, next_token = jobs.list_jobs(cp, state, limit, token)
    counts = {}
    for open_state in OPEN_STATES:  # one bounded query each: the filter's numbers
        listed, more = cp.store.list_jobs([open_state], COUNTED_UP_TO, None)
        counts[open_state.value] = len(listed) + (1 if more else 0)
    return JobsPage(found, JobState(state) if state else None, next_token, counts)


def newest_job(cp: ControlPlane) -> Job | None:
    """The job a detail widget shows when it was given none: the newest open one, else the newest."""
    for states in (list(OPEN_STATES), list(JobState)):
        found, _ = cp.store.list_jobs(states, 1, None)
        if found:
            return found[0]
    return None


def job_detail(cp: ControlPlane, job_id: str, focus: int | None = None) -> JobDetail:
    job = jobs.get_job(cp, job_id)
    tasks, token = jobs.list_tasks(cp, job_id, None, TASKS_SHOWN, None)
    histories = [TaskHistory(t, sorted(cp.store.attempts(job_id, t.index), key=lambda a: a.number)) for t in tasks]
    chosen = _focus(histories, focus)
    if focus is not None and (chosen is None or chosen.task.index != focus):
        chosen = TaskHistory(jobs.get_task(cp, job_id, focus), jobs.attempts(cp, job_id, focus))
    tail = None
    if chosen is not None and chosen.task.attempt > 0:
        tail = jobs.task_log(cp, job_id, chosen.task.index, None, None, TAIL_LINES, newest=True)
    gang_checkpoints = []
    if chosen is not None and chosen.task.nodes > 1:
        gang_checkpoints = cp.store.task_events(job_id, chosen.task.index, "CheckpointCommitted", GANG_CHECKPOINTS_SHOWN)
    return JobDetail(
        job=job, tasks=histories, more_tasks=token is not None,
        events=cp.store.timeline(job_id, EVENTS_SHOWN, newest=True), stats=jobs.statistics(cp, job_id),
        focus=chosen, tail=tail, logs_kept=cp.logs is not None, gang_checkpoints=gang_checkpoints,
    )


def _focus(histories: list[TaskHistory], asked: int | None) -> TaskHistory | None:
    """The asked task; else the one a person most likely wants to read: running, then failed, then any
    that ran, newest activity first."""
    if asked is not None:
        return next((h for h in histories if h.task.index == asked), None)
    ran = [h for h in histories if h.task.attempt > 0]
    if not ran:
        return None
    rank = {TaskState.RUNNING: 0, TaskState.FAILED: 1}

    def key(history: TaskHistory) -> tuple[int, float]:
        moment = history.task.updated_at or history.task.started_at
        return rank.get(history.task.state, 2), -(moment.timestamp() if moment else 0.0)

    return min(ran, key=key)


@dataclass(frozen=True)
class AttemptLog:
    job: Job
    task: Task
    page: jobs.LogPage
    whole: bool  # the whole log (up to LOG_LINES), or its newest lines


def attempt_log(cp: ControlPlane, job_id: str, index: int, attempt: int | None, whole: bool) -> AttemptLog:
    job = jobs.get_job(cp, job_id)
    task = jobs.get_task(cp, job_id, index)
    page = jobs.task_log(cp, job_id, index, attempt, None, LOG_LINES if whole else TAIL_LINES * 4, newest=not whole)
    return AttemptLog(job, task, page, whole)


JOB_ACTIONS = ("cancel", "suspend", "resume")


def act(cp: ControlPlane, action: str, job_id: str, index: int | None, by: str) -> Outcome:
    """Carry out a person's action with the API's own use cases; what the state does not allow is said, not raised."""
    try:
        if action in JOB_ACTIONS:
            job = jobs.control_job(cp, job_id, action, by)
            return Outcome(True, f"{action} requested: the job is {job.state.value}, asked to {job.desired.value}")
        if action == "cancel-task" and index is not None:
            task = jobs.cancel_task(cp, job_id, index, by)
            return Outcome(True, f"cancel of task {task.index} requested (it is {task.state.value})", [task.index])
        if action == "checkpoint":
            asked = jobs.request_checkpoint(cp, job_id, index, by)
            what = f"task {asked[0]}" if index is not None else f"{len(asked)} running task{'s' if len(asked) != 1 else ''}"
            return Outcome(True, f"checkpoint requested of {what}: each checkpoints within a control poll", asked)
    except jobs.Conflict as refused:
        return Outcome(False, str(refused))
    raise ValueError(f"unknown action {action!r}")

