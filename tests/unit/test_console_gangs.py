"""A gang task (`nodes` > 1) in the console, pure: its row says it is a gang, the focused gang shows its
ranks' instances, its gang checkpoints and each attempt's instances, its costs count all N instances,
the timeline words its events; a task of one instance reads as before. Everything stays escaped."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spotrun.console import gangs, html, views
from spotrun.domain.model import Checkpoint, TaskState
from tests.unit.test_console_views import ARN, EVIL, NOW, VIEWER, attempt, event, job, task
from tests.unit.test_console_views import detail as one_instance_detail

RANKS = ("i-0aaaaaaaaaaaaaaa0", "i-0bbbbbbbbbbbbbbb1")
STATS = {"pools": {}, "total": {"wall_seconds": 7200, "exec_seconds": 3600, "instance_seconds": 14400,
                                "spot_cost_usd": 0.16, "on_demand_cost_usd": 0.68}}


def gang_task(**changes):
    base = dict(nodes=2, gang_instances=RANKS, instance_id=RANKS[0],
                checkpoint=Checkpoint(3, "k", 2, 5 * 2**20, NOW - timedelta(minutes=2), "signal", ranks=2))
    base.update(changes)
    return task(0, **base)


def gang_attempts():
    """Attempt 1 ran an hour on two instances and was interrupted; attempt 2 runs on RANKS since an hour."""
    return [attempt(1, nodes=2, gang_instances=("i-01", "i-02"), launched_at=NOW - timedelta(hours=2),
                    ended_at=NOW - timedelta(hours=1), outcome="interrupted"),
            attempt(2, nodes=2, gang_instances=RANKS, launched_at=NOW - timedelta(hours=1))]


COMMITS = [event("CheckpointCommitted", 0, 2, seq=3, bytes=5 * 2**20, ranks=2),
           event("CheckpointCommitted", 0, 1, seq=2, bytes=4 * 2**20, ranks=2)]


def gang_detail(t=None, attempts=None, commits=COMMITS) -> views.JobView:
    t = t or gang_task()
    attempts = gang_attempts() if attempts is None else attempts
    return views.job_view(job(), [(t, attempts)], False, [], STATS, VIEWER, (t, t.attempt, [], True), None, None,
                          (t, attempts, commits))


def test_a_gang_tasks_row_says_it_is_a_gang_and_its_checkpoint_names_its_ranks():
    facts = {label: value for label, value, _ in views.job_view(
        job(spec={"nodes": 2, "checkpoint": {"method": "signal"}}), [], False, [], STATS, VIEWER, None).facts}
    assert facts["tasks"] == "2, each a gang of 2"
    row = gang_detail().tasks[0]
    assert row.gang == "gang of 2"
    assert row.checkpoint.startswith("#3 of 2 ranks, 5.0 MiB, ")
    rendered = html.job_widget(gang_detail(), ARN)
    assert "gang of 2" in rendered and "#3 of 2 ranks" in rendered


def test_a_one_instance_task_reads_as_before():
    t = task(0, checkpoint=Checkpoint(3, "k", 2, 5 * 2**20, NOW - timedelta(minutes=2), "signal"))
    view = one_instance_detail(job(), [(t, [attempt(1, launched_at=NOW - timedelta(hours=1))])])
    row = view.tasks[0]
    assert dict((label, value) for label, value, _ in view.facts)["tasks"] == "2"
    assert row.gang == "" and row.checkpoint.startswith("#3, 5.0 MiB, ")
    assert view.gang is None and row.attempts[0].cost == "$0.0400" and row.attempts[0].instances == 1
    rendered = html.job_widget(view, ARN)
    assert "gang of" not in rendered and "<th>instances</th>" not in rendered and "ranks" not in rendered


def test_the_focused_gang_shows_its_ranks_instances_checkpoints_and_each_attempts_instances():
    gang = gang_detail().gang
    assert gang is not None and (gang.index, gang.nodes, gang.attempt) == (0, 2, 2)
    assert [(r.rank, r.instance) for r in gang.ranks] == [(0, RANKS[0]), (1, RANKS[1])]
    assert gang.note == "the instances of attempt 2, by rank"
    assert [(c.seq, c.ranks, c.size, c.attempt) for c in gang.checkpoints] == [(3, 2, "5.0 MiB", "2"),
                                                                              (2, 2, "4.0 MiB", "1")]
    assert [(a.number, [r.instance for r in a.instances]) for a in gang.attempts] == [(2, list(RANKS)),
                                                                                      (1, ["i-01", "i-02"])]
    rendered = html.job_widget(gang_detail(), ARN)
    assert "gang of task 0: 2 ranks" in rendered
    assert all(instance in rendered for instance in (*RANKS, "i-01", "i-02"))


def test_a_gang_between_attempts_or_ended_says_so():
    queued = gang_task(state=TaskState.QUEUED, gang_instances=(), instance_id=None)
    gang = gang_detail(queued, commits=[]).gang
    assert gang is not None and gang.ranks == [] and gang.checkpoints == []
    assert gang.note == "no instances now: attempt 2 holds none (queued)"
    assert "no gang checkpoint committed yet" in html.job_widget(gang_detail(queued, commits=[]), ARN)
    ended = gang_detail(gang_task(state=TaskState.SUCCEEDED)).gang
    assert ended is not None and [r.instance for r in ended.ranks] == list(RANKS)
    assert ended.note == "the instances attempt 2 ran on, by rank (succeeded)"
    fresh = gang_detail(gang_task(state=TaskState.QUEUED, attempt=0, gang_instances=(), checkpoint=None), [], []).gang
    assert fresh is not None and fresh.note == "no instances yet: the gang has not been launched"


def test_a_gang_attempts_cost_and_the_chart_count_its_n_instances():
    rows = gang_detail().tasks[0].attempts
    # each attempt ran an hour on 2 instances at $0.04 an instance-hour
    assert [(a.number, a.instances, a.cost) for a in rows] == [(1, 2, "$0.0800"), (2, 2, "$0.0800")]
    chart = gang_detail().chart
    assert chart is not None and chart.top_cost == "$0.1600"
    alone = [attempt(1, launched_at=NOW - timedelta(hours=2), ended_at=NOW - timedelta(hours=1)),
             attempt(2, launched_at=NOW - timedelta(hours=1))]
    single = views.job_view(job(), [(task(0), alone)], False, [], STATS, VIEWER, None)
    assert single.chart is not None and single.chart.top_cost == "$0.0800"
    # the chart's curve at its middle counts the first attempt's two instances only: half of the top
    middle = chart.cost[len(chart.cost) // 2]
    assert middle[1] == pytest.approx(0.5, abs=0.02)


def test_the_totals_show_instance_time_and_the_facts_may_wrap():
    view = gang_detail()
    assert ("instance time", "4 h 00 min") in view.totals
    rendered = html.job_widget(view, ARN)
    # a space between facts: a long line of them wraps inside its column instead of overflowing it
    assert "</span> <span><b>execution time</b>" in rendered and "</span> <span><b>instance time</b>" in rendered


@pytest.mark.parametrize(("given", "said"), [
    (event("GangLaunched", 0, 2, pool="c6i.large@us-east-1a", ranks=list(RANKS)),
     f"Task 0 (attempt 2): its gang of 2 launched in c6i.large@us-east-1a: rank 0 {RANKS[0]}, rank 1 {RANKS[1]}"),
    (event("GangLaunched", 1, 1, pool="p", ranks=[f"i-{n}" for n in range(6)]),
     "Task 1 (attempt 1): its gang of 6 launched in p: rank 0 i-0, rank 1 i-1, rank 2 i-2, rank 3 i-3 and 2 more"),
    (event("CheckpointCommitted", 0, 2, seq=3, bytes=3 * 2**20, ranks=2),
     "Task 0 (attempt 2) saved gang checkpoint 3 of all 2 ranks, 3.0 MiB"),
    (event("CheckpointCommitted", 0, 2, seq=3, bytes=3 * 2**20), "Task 0 (attempt 2) saved checkpoint 3, 3.0 MiB"),
    (event("RankEnded", 0, 1, rank=1, instance="i-02", outcome="interrupted"),
     "Rank 1 of task 0 (attempt 1) on i-02 ended: interrupted (spot reclaim)"),
    (event("RankEnded", 0, 1, rank=1, instance="i-02", outcome="environment_error", reason="disk full"),
     "Rank 1 of task 0 (attempt 1) on i-02 ended: failed (environment): disk full"),
    (event("TaskInterrupted", 0, 1, reason="spot interruption warning (terminate), at rank 1 of the gang (i-02)",
           replacement=2, pool="p"),
     "Task 0 (attempt 1) interrupted: spot interruption warning (terminate), at rank 1 of the gang (i-02); "
     "attempt 2 replaces it at once"),
    (event("TaskInterrupted", 0, 1, reason="instance terminated"), "Task 0 (attempt 1) interrupted, queued again: "
                                                                   "instance terminated"),
])
def test_a_gangs_events_are_told_in_words(given, said):
    assert views.sentence(given) == said


def test_what_a_gang_shows_is_escaped():
    t = gang_task(gang_instances=(EVIL, "i-1"))
    attempts = [attempt(1, nodes=2, gang_instances=(EVIL, "i-1"), pool=EVIL)]
    commits = [event("CheckpointCommitted", 0, 1, seq=1, bytes=1, ranks=2)]
    view = views.job_view(job(), [(t, attempts)], False, [event("GangLaunched", 0, 1, pool=EVIL, ranks=[EVIL])],
                          STATS, VIEWER, None, None, None, (t, attempts, commits))
    rendered = html.job_widget(view, ARN)
    assert "<script" not in rendered.lower() and "<img" not in rendered.lower()
    assert rendered.count("&lt;script&gt;") >= 4  # a rank's instance, an attempt's instances and pool, the timeline


def test_instance_hours_are_n_instances_up_to_the_end_or_the_moment_asked():
    gang = attempt(1, nodes=3, launched_at=NOW - timedelta(hours=2), ended_at=NOW - timedelta(hours=1))
    assert gangs.instance_hours(gang, NOW) == pytest.approx(3.0)
    assert gangs.instance_hours(gang, NOW - timedelta(hours=1, minutes=30)) == pytest.approx(1.5)
    assert gangs.instance_hours(attempt(2, launched_at=None), NOW) is None
