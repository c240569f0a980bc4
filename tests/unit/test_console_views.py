"""The console's view models and renderer, pure: times in the viewer's zone, the timeline in words,
which buttons a job's state offers, the chart's curves, and escaping of everything a job, a task, a
log or a reason can say."""

from __future__ import annotations

import html as std_html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from spotrun.console import html, views
from spotrun.domain.model import (
    Attempt,
    Checkpoint,
    Desired,
    Job,
    JobState,
    LogLine,
    Market,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ARN = "arn:aws:lambda:us-east-1:123456789012:function:spotrun-console"
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&'


def job(state: JobState = JobState.RUNNING, desired: Desired = Desired.RUN, **changes) -> Job:
    base = dict(job_id="j-0194f3a2b1c0a1b2c3d4", name="pi-sweep", spec={"checkpoint": {"method": "signal"}},
                state=state, task_count=2, has_combine=False, counts={"RUNNING": 1, "SUCCEEDED": 1}, active=1,
                desired=desired, created_at=NOW - timedelta(hours=2), updated_at=NOW - timedelta(minutes=5),
                owner="arn:aws:iam::1:user/alice", stats={"c6i.large@us-east-1a|cost": 0.25})
    base.update(changes)
    return Job(**base)


def task(index: int, state: TaskState = TaskState.RUNNING, **changes) -> Task:
    base = dict(job_id="j-0194f3a2b1c0a1b2c3d4", index=index, state=state, attempt=2, pool="c6i.large@us-east-1a",
                progress=0.5, started_at=NOW - timedelta(hours=1), updated_at=NOW - timedelta(minutes=1))
    base.update(changes)
    return Task(**base)


def attempt(number: int, **changes) -> Attempt:
    base = dict(job_id="j-0194f3a2b1c0a1b2c3d4", index=0, number=number, pool="c6i.large@us-east-1a",
                market=Market.SPOT, launched_at=NOW - timedelta(hours=2), price_per_hour=0.04)
    base.update(changes)
    return Attempt(**base)


VIEWER = views.Viewer(now=NOW, offset_minutes=330, zone="Asia/Kolkata")


@pytest.mark.parametrize(("context", "offset", "zone", "dark"), [
    ({"timezone": {"label": "UTC", "offsetISO": "+00:00", "offsetInMinutes": 0}}, 0, "UTC", False),
    ({"timezone": {"label": "Local", "offsetISO": "+05:30", "offsetInMinutes": 330}, "theme": "dark"}, 330,
     "UTC+05:30", True),
    ({"timezone": {"label": "America/Los_Angeles", "offsetISO": "-08:00"}}, -480, "America/Los_Angeles", False),
    ({"timezone": {"offsetInMinutes": 60}}, 60, "UTC+01:00", False),
    ({}, 0, "UTC", False),
])
def test_the_viewer_is_read_from_the_widget_context(context, offset, zone, dark):
    viewer = views.Viewer.of(context, NOW)
    assert (viewer.offset_minutes, viewer.zone, viewer.dark) == (offset, zone, dark)


def test_times_are_shown_in_the_viewers_zone_with_utc_on_hover():
    same_day = views.when(NOW - timedelta(hours=1), VIEWER)
    assert same_day.text == "16:30:00"  # 11:00 UTC in UTC+05:30
    assert same_day.full == "2026-12-05 16:30:00 Asia/Kolkata (2026-12-05 11:00:00 UTC)"
    assert views.when(NOW - timedelta(days=3), VIEWER).text == "Dec 02 17:30"
    assert views.when(datetime(2025, 1, 1, tzinfo=UTC), VIEWER).text == "2025-01-01 05:30"


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0 s"), (45.9, "45 s"), (200, "3 min 20 s"),
                                               (7500, "2 h 05 min"), (3 * 86400 + 4 * 3600, "3 d 4 h")])
def test_durations_are_human(seconds, text):
    assert views.duration(seconds) == text


def event(kind: str, index: int | None = None, attempt_: int | None = None, **detail) -> TimelineEvent:
    return TimelineEvent("j-1", NOW, kind, kind, index, attempt_, detail)


@pytest.mark.parametrize(("given", "said"), [
    (event("JobSubmitted", tasks=3, by="arn:aws:iam::1:user/alice"), "Submitted by alice with 3 tasks"),
    (event("JobSuspendRequested", by="console ops (request 7)"), "Suspend requested by console ops (request 7)"),
    (event("TaskLaunching", 2, 1, pool="c6i.large@us-east-1a", market="spot"),
     "Task 2 (attempt 1) launching on spot in c6i.large@us-east-1a"),
    (event("CheckpointCommitted", 2, 1, seq=3, bytes=3 * 2**20), "Task 2 (attempt 1) saved checkpoint 3, 3.0 MiB"),
    (event("CheckpointRestored", 2, 3, seq=3, from_attempt=1), "Task 2 (attempt 3) restored checkpoint 3 of attempt 1"),
    (event("TaskStarted", 2, 3, instance="i-0a"), "Task 2 (attempt 3) started on i-0a"),
    (event("TaskStarted", 0, 1, instance="i-0a", ranks=["i-0a", "i-0b"]),
     "Task 0 (attempt 1) started on its gang of 2: rank 0 i-0a, rank 1 i-0b"),
    (event("AttemptEnded", 2, 1, outcome="interrupted", checkpoint_seq=4, unsaved_seconds=1.5),
     "Task 2 (attempt 1) ended (interrupted (spot reclaim)) after its final checkpoint 4, 1 s of work lost"),
    (event("TaskSucceeded", 0, 2, exec_seconds=125), "Task 0 (attempt 2) succeeded in 2 min 05 s"),
    (event("JobSucceeded", wall_seconds=600, spot_cost_usd=0.0123), "The job succeeded after 10 min 00 s, cost $0.0123"),
    (event("CheckpointRequested", by="bob", count=4, tasks=[0, 1, 2, 3]), "Checkpoint requested by bob of 4 running tasks"),
    (event("TaskCancelRequested", 5, 1, by="bob"), "Cancel of task 5 requested by bob"),
    (event("SomethingNew", 1, 1, note="n"), "SomethingNew task 1 (attempt 1): note n"),
])
def test_the_timeline_is_told_in_words(given, said):
    assert views.sentence(given) == said


def detail(j: Job, tasks: list[tuple[Task, list[Attempt]]], lines: list[LogLine] | None = None,
           flash: views.Flash | None = None) -> views.JobView:
    stats = {"pools": {"c6i.large@us-east-1a": {"executions": 2, "failures": 0, "interruptions": 1, "exec_seconds": 3600,
                                                 "spot_cost_usd": 0.08, "on_demand_cost_usd": 0.34}},
             "total": {"wall_seconds": 7200, "exec_seconds": 3600, "speedup": 0.5, "executions": 2, "interruptions": 1,
                       "spot_cost_usd": 0.08, "on_demand_cost_usd": 0.34}}
    tail = (tasks[0][0], tasks[0][0].attempt, lines or [], True) if tasks else None
    return views.job_view(j, tasks, False, [event("JobSubmitted", tasks=2)], stats, VIEWER, tail, None, flash)


def test_every_value_is_escaped_wherever_it_is_put():
    bad_task = task(0, reason=EVIL, exit_code=3, checkpoint=Checkpoint(2, "k", 1, 2**20, NOW, "signal"))
    view = detail(job(owner=EVIL, reason=EVIL), [(bad_task, [attempt(1, outcome=EVIL, pool=EVIL)])],
                  [LogLine(NOW, EVIL)], views.Flash(False, EVIL))
    rendered = html.job_widget(view, ARN + '"><script>')
    assert "<script" not in rendered.lower() and "<img" not in rendered.lower()
    assert rendered.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 4  # reason, owner, log, flash...
    assert '"><script>' not in rendered
    log = views.log_view(job(), bad_task, 2, [LogLine(NOW, EVIL)], True, True, 100, VIEWER, None)
    assert "<script" not in html.log_widget(log, ARN).lower()
    jobs = views.jobs_view([job(name="ok")], None, EVIL, {"QUEUED": 0}, VIEWER, 100)
    assert "<script" not in html.jobs_widget(jobs, ARN).lower()


def actions(rendered: str) -> list[tuple[dict[str, str], dict[str, object]]]:
    """Each cwdb-action: its attributes and its params, read back as CloudWatch reads them."""
    found = []
    for attributes, body in re.findall(r"<cwdb-action ([^>]*)>(.*?)</cwdb-action>", rendered):
        found.append((dict(re.findall(r'(\w+)="([^"]*)"', attributes)), json.loads(std_html.unescape(body))))
    return found


def test_buttons_call_the_console_function_with_json_params_and_ask_before_steering():
    rendered = html.job_widget(detail(job(), [(task(0), [attempt(1)])]), ARN)
    buttons = actions(rendered)
    assert all(a["action"] == "call" and a["endpoint"] == ARN for a, _ in buttons)
    steer = {p["action"]: a for a, p in buttons if "action" in p}
    assert set(steer) == {"checkpoint", "suspend", "cancel", "cancel-task"}
    assert all(a.get("confirmation") and a["display"] == "widget" for a in steer.values())
    logs = [(a, p) for a, p in buttons if p.get("view") == "log"]
    assert logs and all(a["display"] == "popup" for a, _ in logs)


@pytest.mark.parametrize(("state", "desired", "offered"), [
    (JobState.RUNNING, Desired.RUN, {"checkpoint", "suspend", "cancel"}),
    (JobState.SUSPENDED, Desired.SUSPEND, {"resume", "cancel"}),
    (JobState.RUNNING, Desired.CANCEL, set()),
    (JobState.SUCCEEDED, Desired.RUN, set()),
])
def test_a_job_offers_the_actions_its_state_allows(state, desired, offered):
    assert {a.name for a in views.job_actions(job(state, desired))} == offered


def test_a_job_without_checkpoints_offers_no_checkpoint_now():
    assert "checkpoint" not in {a.name for a in views.job_actions(job(spec={"checkpoint": {"method": "none"}}))}


def test_the_chart_follows_succeeded_tasks_and_the_attempts_cost():
    done = task(0, TaskState.SUCCEEDED, finished_at=NOW - timedelta(hours=1))
    running = task(1)
    histories = [(done, [attempt(1, ended_at=NOW - timedelta(hours=1), price_per_hour=0.06)]),
                 (running, [attempt(1, index=1, price_per_hour=0.06)])]
    chart = views.chart(job(), histories, VIEWER)
    assert chart.progress[0] == (0.0, 0.0) and chart.progress[-1] == (1.0, 0.5)
    assert [y for _, y in chart.progress] == sorted(y for _, y in chart.progress)
    assert chart.cost[-1] == (1.0, 1.0) and chart.top_cost == "$0.1800"  # 1 h + 2 h at $0.06
    assert chart.cost[30][1] == pytest.approx((0.06 + 0.06) / 0.18)  # both ran the first hour
    assert chart.note == "all tasks"


def test_an_attempts_history_says_where_when_how_it_ended_and_what_it_restored():
    row = views.job_view(job(), [(task(0), [
        attempt(1, ended_at=NOW - timedelta(hours=1), outcome="interrupted", scope=Scope.ENVIRONMENT),
        attempt(2, launched_at=NOW - timedelta(minutes=50), restored_seq=4, restored_from=1),
    ])], False, [], {}, VIEWER, None).tasks[0]
    first, second = row.attempts
    assert (first.outcome, first.scope, first.ran, first.cost) == ("interrupted (spot reclaim)", "environment",
                                                                   "1 h 00 min", "$0.0400")
    assert (second.outcome, second.restored, second.end) == ("running", "#4 of attempt 1", None)
