"""View models of the console: what the use cases found (`spotrun.overview`), in words, human
durations and the viewer's time zone, ready for `spotrun.console.html` to render. Pure.

Times are shown in the zone the viewer's dashboard uses (CloudWatch's widgetContext.timezone; the
local page sends the browser's), with the exact UTC time on hover; the words themselves (times,
durations, money, the timeline's sentences) are `spotrun.console.words`'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spotrun.console.gangs import GangView, gang_label, gang_view, instance_hours
from spotrun.console.words import OUTCOMES as OUTCOMES
from spotrun.console.words import Viewer as Viewer
from spotrun.console.words import When as When
from spotrun.console.words import duration as duration
from spotrun.console.words import mib as mib
from spotrun.console.words import money as money
from spotrun.console.words import sentence as sentence
from spotrun.console.words import when as when
from spotrun.domain.model import Attempt, Job, JobState, LogLine, Task, TaskState, TimelineEvent

FINISHED_JOBS = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
FINISHED_TASKS = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
TASK_ORDER = ("WAITING", "QUEUED", "LAUNCHING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLED")


# ------------------------------------------------------------------------------ pieces

@dataclass(frozen=True)
class Count:
    state: str
    count: int


@dataclass(frozen=True)
class Bar:
    fraction: float
    label: str


def counts_of(counts: Mapping[str, int]) -> list[Count]:
    order = [*TASK_ORDER, *sorted(k for k in counts if k not in TASK_ORDER)]
    return [Count(state, counts[state]) for state in order if counts.get(state)]


def job_progress(job: Job) -> Bar:
    total = job.task_count + (1 if job.has_combine else 0)
    done = job.counts.get(TaskState.SUCCEEDED, 0)
    fraction = done / total if total else 0.0
    return Bar(fraction, f"{done}/{total} succeeded")


def job_cost(job: Job) -> float:
    return sum(value for key, value in job.stats.items() if key.rpartition("|")[2] == "cost")


@dataclass(frozen=True)
class Action:
    """A button: `name` is what the console function is asked to do."""

    name: str
    label: str
    confirmation: str
    task: int | None = None
    danger: bool = False


def job_actions(job: Job) -> list[Action]:
    if job.state in FINISHED_JOBS:
        return []
    found = []
    if job.desired.value == "RUN" and job.counts.get(TaskState.RUNNING, 0) and _checkpoints(job):
        found.append(Action("checkpoint", "Checkpoint now", f"Checkpoint every running task of {job.name} now?"))
    if job.desired.value == "RUN":
        found.append(Action("suspend", "Suspend", f"Suspend {job.name}? Running tasks checkpoint and stop; "
                                                  "resume continues from there."))
    if job.desired.value == "SUSPEND":
        found.append(Action("resume", "Resume", f"Resume {job.name}?"))
    if job.desired.value != "CANCEL":
        found.append(Action("cancel", "Cancel", f"Cancel {job.name}? Its running tasks are killed.", danger=True))
    return found


def _checkpoints(job: Job) -> bool:
    method = (job.spec.get("checkpoint") or {}).get("method", "dmtcp")
    return bool(method != "none")


# ------------------------------------------------------------------------------ the jobs widget

@dataclass(frozen=True)
class Filter:
    label: str
    state: str | None
    count: str  # '' when not counted
    active: bool


@dataclass(frozen=True)
class JobRow:
    job_id: str
    name: str
    state: str
    desired: str
    created: When
    age: str  # how long it has run (or ran)
    progress: Bar
    counts: list[Count]
    cost: str


@dataclass(frozen=True)
class JobsView:
    viewer: Viewer
    filters: list[Filter]
    rows: list[JobRow]
    state: str | None
    next_page: str | None
    totals: list[Count]  # tasks per state over the jobs shown


def jobs_view(jobs: Sequence[Job], state: JobState | None, token: str | None, open_counts: Mapping[str, int],
              viewer: Viewer, counted_up_to: int) -> JobsView:
    def counted(value: str) -> str:
        if value not in open_counts:
            return ""
        number = open_counts[value]
        return f"{counted_up_to}+" if number > counted_up_to else str(number)

    filters = [Filter("all", None, "", state is None)]
    filters += [Filter(s.value.lower(), s.value, counted(s.value), state == s) for s in JobState]
    rows = []
    totals: dict[str, int] = {}
    for job in jobs:
        end = job.updated_at if job.state in FINISHED_JOBS else viewer.now
        created = when(job.created_at, viewer)
        assert created is not None
        rows.append(JobRow(job.job_id, job.name, job.state.value, job.desired.value, created,
                           duration((end - job.created_at).total_seconds()), job_progress(job), counts_of(job.counts),
                           money(job_cost(job))))
        for key, value in job.counts.items():
            totals[key] = totals.get(key, 0) + value
    return JobsView(viewer, filters, rows, state.value if state else None, token, counts_of(totals))


# ------------------------------------------------------------------------------ a job in detail

@dataclass(frozen=True)
class AttemptRow:
    number: int
    pool: str
    market: str
    start: When | None
    end: When | None
    ran: str
    outcome: str
    scope: str
    restored: str
    cost: str  # its instances' (a gang's N)
    instances: int = 1  # a gang attempt's N


@dataclass(frozen=True)
class TaskRow:
    index: int
    label: str
    gang: str  # 'gang of 2', '' for a task of one instance
    state: str
    attempt: int
    pool: str
    progress: Bar
    checkpoint: str
    note: str  # exit code and reason
    attempts: list[AttemptRow]
    actions: list[Action]
    focused: bool


@dataclass(frozen=True)
class EventLine:
    when: When
    kind: str
    text: str


@dataclass(frozen=True)
class PoolRow:
    pool: str
    runs: int
    failures: int
    interruptions: int
    ran: str
    spot: str
    on_demand: str


@dataclass(frozen=True)
class Chart:
    """Progress (succeeded share of the charted tasks) and instance cost over the job's life, as points
    x, y in 0..1; the renderer scales them."""

    progress: list[tuple[float, float]]
    cost: list[tuple[float, float]]
    start: str
    end: str
    top_cost: str
    note: str


@dataclass(frozen=True)
class Line:
    when: When
    text: str


@dataclass(frozen=True)
class LogTail:
    index: int
    attempt: int
    lines: list[Line]
    note: str  # why there are no lines, or what these are
    link: str | None  # the full stream in the CloudWatch console (AWS only)


@dataclass(frozen=True)
class Flash:
    ok: bool
    text: str


@dataclass(frozen=True)
class JobView:
    viewer: Viewer
    job_id: str
    name: str
    state: str
    desired: str
    facts: list[tuple[str, str, str]]  # (label, value, hover)
    counts: list[Count]
    progress: Bar
    actions: list[Action]
    tasks: list[TaskRow]
    more_tasks: bool
    events: list[EventLine]
    pools: list[PoolRow]
    totals: list[tuple[str, str]]
    chart: Chart | None
    tail: LogTail | None
    flash: Flash | None = None
    attempt_numbers: list[int] = field(default_factory=list)
    gang: GangView | None = None  # the focused task's ranks, checkpoints and instances, when it is a gang


def job_view(job: Job, tasks: Sequence[tuple[Task, Sequence[Attempt]]], more_tasks: bool,
             events: Sequence[TimelineEvent], stats: Mapping[str, Any], viewer: Viewer,
             tail: tuple[Task, int, Sequence[LogLine], bool] | None, log_link: str | None = None,
             flash: Flash | None = None,
             gang: tuple[Task, Sequence[Attempt], Sequence[TimelineEvent]] | None = None) -> JobView:
    """`tail` is (the focused task, its attempt, the newest lines, whether logs are kept at all); `gang` is
    the focused task, its attempts and its newest CheckpointCommitted events, when it is a gang."""
    total = stats.get("total", {})
    finished = job.state in FINISHED_JOBS
    end = job.updated_at if finished else viewer.now
    created = when(job.created_at, viewer)
    assert created is not None
    facts = [("created", created.text, created.full),
             ("ran" if finished else "running for", duration((end - job.created_at).total_seconds()), ""),
             ("tasks", f"{job.task_count}" + (" + combine" if job.has_combine else "") + _gangs(job), ""),
             ("cost so far" if not finished else "cost", money(total.get("spot_cost_usd")), "instances, billed per second"),
             ("owner", job.owner or "-", "")]
    if job.reason:
        facts.append(("reason", job.reason, ""))
    focus = tail[0].index if tail else None
    rows = [_task_row(t, attempts, job, viewer, focus) for t, attempts in tasks]
    pools = [PoolRow(pool, int(row["executions"]), int(row["failures"]), int(row["interruptions"]),
                     duration(row["exec_seconds"]), money(row["spot_cost_usd"]), money(row["on_demand_cost_usd"]))
             for pool, row in sorted((stats.get("pools") or {}).items())]
    spot, on_demand = total.get("spot_cost_usd") or 0.0, total.get("on_demand_cost_usd") or 0.0
    totals = [("wall time", duration(total.get("wall_seconds"))), ("execution time", duration(total.get("exec_seconds"))),
              ("instance time", duration(total.get("instance_seconds"))),  # a gang's N instances' each
              ("speedup", f"{total['speedup']}x" if total.get("speedup") else "-"),
              ("runs", str(total.get("executions", 0))), ("interruptions", str(total.get("interruptions", 0))),
              ("spot cost", money(spot)), ("on demand would cost", money(on_demand)),
              ("saved", f"{1 - spot / on_demand:.0%}" if on_demand else "-")]
    return JobView(
        viewer=viewer, job_id=job.job_id, name=job.name, state=job.state.value, desired=job.desired.value, facts=facts,
        counts=counts_of(job.counts), progress=job_progress(job), actions=job_actions(job), tasks=rows,
        more_tasks=more_tasks, events=[EventLine(_when(e.at, viewer), e.kind, sentence(e)) for e in reversed(events)],
        pools=pools, totals=totals, chart=chart(job, tasks, viewer), flash=flash,
        tail=_tail(tail, viewer, log_link) if tail else None,
        gang=gang_view(*gang, viewer) if gang and gang[0].nodes > 1 else None,
    )


def _gangs(job: Job) -> str:
    """', each a gang of 2' when the job's tasks run on several instances each."""
    nodes = job.spec.get("nodes", 1)
    return f", each a {gang_label(nodes)}" if isinstance(nodes, int) and nodes > 1 else ""


def _when(moment: datetime, viewer: Viewer) -> When:
    found = when(moment, viewer)
    assert found is not None
    return found


def _task_row(task: Task, attempts: Sequence[Attempt], job: Job, viewer: Viewer, focus: int | None) -> TaskRow:
    label = f"{task.index}" + (" (combine)" if task.kind == "combine" else "")
    fraction = 1.0 if task.state == TaskState.SUCCEEDED else max(0.0, min(1.0, task.progress or 0.0))
    checkpoint = "-"
    if task.checkpoint is not None:
        point = task.checkpoint
        ranks = f" of {point.ranks} ranks" if point.ranks > 1 else ""  # a gang's: every rank's part
        checkpoint = (f"#{point.seq}{ranks}, {mib(point.size_bytes)}, "
                      f"{duration((viewer.now - point.committed_at).total_seconds())} ago")
    note = "; ".join(p for p in (f"exit {task.exit_code}" if task.exit_code is not None else "", task.reason) if p)
    actions = []
    if task.state == TaskState.RUNNING and _checkpoints(job) and job.state not in FINISHED_JOBS:
        actions.append(Action("checkpoint", "checkpoint", f"Checkpoint task {task.index} now?", task=task.index))
    if task.state not in FINISHED_TASKS and job.state not in FINISHED_JOBS:
        actions.append(Action("cancel-task", "cancel", f"Cancel task {task.index}?", task=task.index, danger=True))
    return TaskRow(task.index, label, gang_label(task.nodes), task.state.value, task.attempt, task.pool or "-",
                   Bar(fraction, f"{fraction:.0%}" if task.progress is not None or fraction else "-"), checkpoint, note,
                   [_attempt_row(a, viewer) for a in attempts], actions, task.index == focus)


def _attempt_row(attempt: Attempt, viewer: Viewer) -> AttemptRow:
    end = attempt.ended_at
    ran = (end or viewer.now) - attempt.launched_at if attempt.launched_at else None
    hours = instance_hours(attempt, viewer.now)
    cost = hours * attempt.price_per_hour if hours is not None and attempt.price_per_hour else None
    if attempt.outcome is None:
        outcome = "running"
    else:
        outcome = OUTCOMES.get(attempt.outcome, attempt.outcome.replace("_", " "))
        if attempt.outcome == "completed" and attempt.exit_code not in (None, 0):
            outcome = f"exited with code {attempt.exit_code}"
    restored = f"#{attempt.restored_seq} of attempt {attempt.restored_from}" if attempt.restored_seq else "-"
    return AttemptRow(attempt.number, attempt.pool, attempt.market.value, when(attempt.launched_at, viewer),
                      when(end, viewer), duration(ran.total_seconds()) if ran else "-", outcome,
                      attempt.scope.value if attempt.scope else "-", restored, money(cost), attempt.nodes)


def _tail(tail: tuple[Task, int, Sequence[LogLine], bool], viewer: Viewer, link: str | None) -> LogTail:
    task, attempt, lines, kept = tail
    if not kept:
        note = "this deployment keeps no attempt logs"
    elif not lines:
        note = "nothing written yet" if task.state in (TaskState.RUNNING, TaskState.LAUNCHING) else "no output"
    else:
        note = f"the newest {len(lines)} lines of attempt {attempt}"
    return LogTail(task.index, attempt, [Line(_when(line.at, viewer), line.message) for line in lines], note, link)


# ------------------------------------------------------------------------------ the chart

CHART_POINTS = 60


def chart(job: Job, tasks: Sequence[tuple[Task, Sequence[Attempt]]], viewer: Viewer) -> Chart | None:
    if not tasks:
        return None
    start = job.created_at
    end = job.updated_at if job.state in FINISHED_JOBS else viewer.now
    span = max((end - start).total_seconds(), 1.0)
    done = sorted(t.finished_at for t, _ in tasks if t.state == TaskState.SUCCEEDED and t.finished_at)
    attempts = [a for _, history in tasks for a in history if a.launched_at and a.price_per_hour]

    def cost_at(moment: datetime) -> float:
        total = 0.0
        for attempt in attempts:
            assert attempt.price_per_hour is not None
            total += (instance_hours(attempt, moment) or 0.0) * attempt.price_per_hour
        return total

    moments = [start + timedelta(seconds=span * n / CHART_POINTS) for n in range(CHART_POINTS + 1)]
    costs = [cost_at(m) for m in moments]
    top = max(costs) or 1.0
    progress = [(n / CHART_POINTS, sum(1 for d in done if d <= m) / len(tasks)) for n, m in enumerate(moments)]
    first, last = when(start, viewer), when(end, viewer)
    assert first is not None and last is not None
    note = f"the first {len(tasks)} tasks" if len(tasks) < job.task_count + (1 if job.has_combine else 0) else "all tasks"
    return Chart(progress, [(n / CHART_POINTS, c / top) for n, c in enumerate(costs)], first.text, last.text,
                 money(max(costs)), note)


# ------------------------------------------------------------------------------ an attempt's log

@dataclass(frozen=True)
class LogView:
    viewer: Viewer
    job_id: str
    name: str
    index: int
    attempt: int
    attempts: list[int]
    lines: list[Line]
    whole: bool
    note: str
    link: str | None


def log_view(job: Job, task: Task, attempt: int, lines: Sequence[LogLine], whole: bool, kept: bool, limit: int,
             viewer: Viewer, link: str | None) -> LogView:
    if not kept:
        note = "this deployment keeps no attempt logs"
    elif not lines:
        note = "nothing written yet" if attempt == task.attempt and task.state not in FINISHED_TASKS else "no output"
    elif whole and len(lines) >= limit:
        note = f"the first {limit} lines: `spotrun logs {job.job_id} {task.index} --attempt {attempt}` prints all"
    elif whole:
        note = f"the whole log, {len(lines)} lines"
    else:
        note = f"the newest {len(lines)} lines"
    return LogView(viewer, job.job_id, job.name, task.index, attempt, list(range(1, task.attempt + 1)),
                   [Line(_when(line.at, viewer), line.message) for line in lines], whole, note, link)
