"""The CLI's rendering functions: dicts in, text out."""

from __future__ import annotations

from datetime import UTC, datetime

from spotrun_cli import render
from tests.cli.conftest import JOB_ID, event_view, job_view, task_view


def test_progress_bar_has_a_fixed_width_and_eighth_steps() -> None:
    assert render.progress_bar(0, 10) == " " * 10
    assert render.progress_bar(1, 10) == "█" * 10
    assert render.progress_bar(None, 10) == " " * 10
    assert render.progress_bar(0.5, 10) == "█" * 5 + " " * 5
    assert render.progress_bar(0.0125, 10) == "▏" + " " * 9  # one eighth of one cell
    assert render.progress_bar(2.5, 4) == "████"  # clamped
    assert all(len(render.progress_bar(f / 100, 24)) == 24 for f in range(101))


def test_a_succeeded_task_is_complete_even_without_reported_progress() -> None:
    assert render.task_fraction(task_view(0, "SUCCEEDED", progress=None)) == 1.0
    assert render.task_fraction(task_view(0, "QUEUED", progress=None)) is None
    assert render.task_fraction(task_view(0, "RUNNING", progress=0.25)) == 0.25


def test_counts_follow_the_lifecycle_order_and_skip_zeros() -> None:
    assert render.format_counts({"SUCCEEDED": 3, "QUEUED": 0, "RUNNING": 2}) == "RUNNING 2  SUCCEEDED 3"
    assert render.format_counts({}) == "none"


def test_status_shows_the_job_and_one_row_per_task() -> None:
    tasks = [task_view(0, "SUCCEEDED", exit_code=0, progress=None),
             task_view(1, "FAILED", attempt=3, exit_code=3, reason="program exited with code 3", checkpoint=None),
             {**task_view(2, "WAITING", pool=None, progress=None, checkpoint=None), "kind": "combine"}]
    text = render.render_status(job_view(), tasks)
    assert JOB_ID in text and "pi-sweep" in text
    assert "WAITING 1  RUNNING 1  SUCCEEDED 1" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("INDEX"))
    for column in ("STATE", "ATTEMPT", "POOL", "PROGRESS", "CKPT", "EXIT / REASON"):
        assert column in header
    row1 = next(line for line in lines if line.startswith("1 "))
    assert "FAILED" in row1 and " 3 " in row1 and "exit 3: program exited with code 3" in row1
    row0 = next(line for line in lines if line.startswith("0 "))
    assert "100%" in row0 and " 2 " in row0  # checkpoint seq 2
    assert any(line.startswith("2 (combine)") for line in lines)


def test_jobs_table_and_empty_list() -> None:
    text = render.render_jobs([job_view("SUCCEEDED")], more=True)
    assert JOB_ID in text and "SUCCEEDED" in text and "2026-11-23 12:00:00" in text and "--limit" in text
    assert render.render_jobs([]) == "no jobs"


def test_watch_frame_has_bars_counts_and_newest_events() -> None:
    events = [event_view("2026-11-23T12:04:00+00:00", "TaskStarted", 1),
              event_view("2026-11-23T12:04:10.5+00:00", "CheckpointCommitted", 1)]
    frame = render.render_watch(job_view(), [task_view(0, progress=0.5), task_view(1, "QUEUED", progress=None)],
                                events, more_tasks=7, width=200, bar_width=10)
    assert "█████      " in frame and " 50%" in frame
    assert "counts   WAITING 1  RUNNING 1  SUCCEEDED 1" in frame
    assert "newest events:" in frame and "12:04:10  CheckpointCommitted" in frame
    assert "and 7 more tasks" in frame
    assert "\x1b[" not in frame  # no color unless asked


def test_watch_frame_lines_are_cut_to_the_width_without_breaking_colors() -> None:
    frame = render.render_watch(job_view(), [task_view(0, reason="x" * 300, state="FAILED")], [], width=40,
                                color=True)
    for line in frame.splitlines():
        visible = line
        while "\x1b[" in visible:
            start = visible.index("\x1b[")
            visible = visible[:start] + visible[visible.index("m", start) + 1:]
        assert len(visible) <= 40
    assert "\x1b[31m" in frame  # FAILED in red


def test_watch_line_for_plain_output() -> None:
    line = render.render_watch_line(job_view(), now=datetime(2026, 11, 23, 12, 5, 1, tzinfo=UTC))
    assert line == f"12:05:01  job {JOB_ID} RUNNING: 1/3 succeeded  [WAITING 1  RUNNING 1  SUCCEEDED 1]"


def test_events_and_event_cursor() -> None:
    text = render.render_events([{"at": "2026-11-23T12:00:00.000001+00:00", "kind": "JobSubmitted", "task": None,
                                  "attempt": None, "detail": {"tasks": 3}}])
    assert text == "2026-11-23 12:00:00  JobSubmitted                        tasks=3"
    assert render.render_events([]) == "no events"
    # The store's timeline sort keys are '<UTC time, microseconds>Z#<id>'.
    assert render.event_cursor("2026-11-23T13:00:00.5+01:00") == "2026-11-23T12:00:00.500000Z"


def test_api_errors_are_clear() -> None:
    text = render.render_api_error(400, {"error": "invalid job spec", "problems": [
        {"field": "command", "problem": "Field required"}, {"field": "resources.vcpus", "problem": "too big"}]})
    assert text.splitlines() == ["error: invalid job spec", "  - command: Field required",
                                 "  - resources.vcpus: too big"]
    assert render.render_api_error(404, {"error": f"no job {JOB_ID}"}) == f"error: no job {JOB_ID}"
    assert render.render_api_error(409, {"error": "the job is finished"}) == "error: the job is finished"
    refused = render.render_api_error(403, {"message": "the request signature does not match"})
    assert "signature does not match (HTTP 403)" in refused and "make run" in refused
    assert render.render_api_error(502, None, "<html>Bad gateway</html>") == "error: <html>Bad gateway</html> (HTTP 502)"


def test_submitted_and_control_messages() -> None:
    assert render.render_submitted({"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 3}, "pi") == \
        f"submitted job {JOB_ID} (pi): 3 tasks, state QUEUED"
    assert "already exists" in render.render_submitted({"job_id": JOB_ID, "state": "RUNNING", "created": False,
                                                       "tasks": 3})
    assert render.render_control("suspend", job_view(desired="SUSPEND")).startswith(
        f"job {JOB_ID}: suspend requested (state RUNNING, desired SUSPEND)")


def test_stats_show_totals_savings_and_a_row_per_pool() -> None:
    from spotrun_cli.render import render_stats

    text = render_stats({
        "job_id": "j-1", "state": "SUCCEEDED", "final": True, "tasks": {"total": 3, "by_state": {}},
        "pools": {"c6i.large@us-east-1a": {"executions": 2, "failures": 0, "interruptions": 1, "exec_seconds": 100.0,
                                           "instance_seconds": 120.0, "spot_cost_usd": 0.001, "on_demand_cost_usd": 0.003}},
        "total": {"executions": 2, "failures": 0, "interruptions": 1, "wall_seconds": 60.0, "exec_seconds": 100.0,
                  "instance_seconds": 120.0, "spot_cost_usd": 0.001, "on_demand_cost_usd": 0.004, "speedup": 1.67},
    })
    assert "interruptions 1" in text and "75% saved" in text and "1.67x" in text
    assert "c6i.large@us-east-1a" in text


DMTCP_REASON = ("environment: dmtcp: dmtcp_launch not found on PATH; install DMTCP 4.2.0 or choose "
                "checkpoint.method: signal|none")


def test_status_and_events_show_a_reason_whole() -> None:
    """Issue 10: a local task's reason was cut to 'CheckpointerUnavailable: checkpoint metho…' in the
    status table; the table's last column now holds the whole reason."""
    text = render.render_tasks([task_view(0, "FAILED", reason=DMTCP_REASON)])
    assert DMTCP_REASON in text
    event = {**event_view("2026-11-23T12:00:00+00:00", "TaskFailed", 0), "detail": {"reason": DMTCP_REASON}}
    assert render.render_event(event).endswith(f"reason={DMTCP_REASON}")


def test_a_clipped_text_ends_between_words_with_an_ellipsis() -> None:
    for limit in range(20, len(DMTCP_REASON)):
        clipped = render._clip(DMTCP_REASON, limit)
        assert len(clipped) <= limit and clipped.endswith("…")
        kept = clipped[:-1]
        assert DMTCP_REASON.startswith(kept) and DMTCP_REASON[len(kept)] in " ,;:", (limit, clipped)
    assert render._clip(DMTCP_REASON, len(DMTCP_REASON)) == DMTCP_REASON
    assert render._clip("x" * 50, 10) == "x" * 9 + "…"  # one word longer than the room: cut inside it


def test_a_watch_frame_clips_reasons_between_words_and_says_where_they_are_whole() -> None:
    frame = render.render_watch(job_view(), [task_view(0, "FAILED", reason=DMTCP_REASON)], [], width=100)
    [row] = [line for line in frame.splitlines() if line.lstrip().startswith("0 ")]
    assert len(row) <= 100 and row.endswith("…")
    kept = row[row.index("environment:"):-1]
    assert DMTCP_REASON.startswith(kept) and DMTCP_REASON[len(kept)] == " "
    assert f"`spotrun status {JOB_ID}` shows them whole" in frame
    wide = render.render_watch(job_view(), [task_view(0, "FAILED", reason=DMTCP_REASON)], [], width=300)
    assert DMTCP_REASON in wide and "shows them whole" not in wide


def test_a_gang_task_shows_its_ranks_instances_and_its_checkpoints_ranks() -> None:
    gang = task_view(0, "RUNNING", nodes=2, ranks=[{"rank": 0, "instance_id": "i-0aaa"},
                                                   {"rank": 1, "instance_id": "i-0bbb"}],
                     checkpoint={"seq": 3, "attempt": 1, "bytes": 10, "committed_at": "2026-12-05T12:00:00Z",
                                 "ranks": 2})
    text = render.render_tasks([gang, task_view(1, "QUEUED")])
    assert "3 (2 ranks)" in text
    assert "task 0: gang of 2: rank 0 i-0aaa, rank 1 i-0bbb" in text
    assert "task 1:" not in text  # a task of one instance has no gang line
