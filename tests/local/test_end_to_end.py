"""The local runtime for real: moto's server, agent processes, the replayed market, real HTTP.

These run the same code as `make run`, on a smaller problem.
"""

from __future__ import annotations

import contextlib
import json
import time
from functools import partial

import pytest

from spotrun.domain.model import JobState
from spotrun_local import demo
from spotrun_local.market import MarketReplay, load_traces, steady_window
from spotrun_local.runtime import LocalRuntime, RuntimeOptions
from tests import support

pytestmark = pytest.mark.slow


def test_the_run_command_solves_a_problem_through_real_interruptions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    monkeypatch.setenv("SPOTRUN_REPORT", str(report))
    code = demo.run(limit=16_000_000, tasks=3, deadline_seconds=240)
    summary = json.loads(report.read_text())
    assert code == 0 and summary["correct"], summary
    assert summary["result"]["primes"] == demo.sieve_count(16_000_000) == 1_031_130
    assert summary["interruptions"] >= 1 and summary["market_warnings"] >= 1
    assert summary["checkpoints_committed"] >= 1
    # counts a user can find again: 3 tasks + the combine, one TaskInterrupted event per interruption
    assert summary["tasks"] == 4 and summary["interruptions"] == summary["interruption_events"]
    assert summary["attempts"] >= summary["tasks"] + summary["interruptions"]


def test_the_summary_counts_what_the_statistics_and_the_timeline_show():
    stats = {"tasks": {"total": 5}, "total": {"executions": 7, "interruptions": 2}}
    timeline = [{"kind": k} for k in ("LaunchRefused", "LaunchRefused", "TaskLaunching", "TaskInterrupted",
                                      "TaskLaunching", "TaskInterrupted", "CheckpointCommitted", "EnvironmentFault")]
    assert demo.summary_counts(stats, timeline) == {
        "tasks": 5, "attempts": 7, "launches_refused_for_capacity": 2, "interruptions": 2, "interruption_events": 2,
        "checkpoints_committed": 1, "checkpoints_restored": 0}


@contextlib.contextmanager
def steady_runtime(tmp_path, monkeypatch):
    """The local runtime over a window of the traces where no zone loses capacity."""
    monkeypatch.chdir(tmp_path)
    options = RuntimeOptions(root=tmp_path / "run", zones=("us-east-1c", "us-east-1f"))
    traces = load_traces(zones=options.zones)
    market = MarketReplay(traces, steady_window(traces, options.zones, 200), options.tick_seconds)
    runtime = LocalRuntime(market, options).start()
    try:
        yield runtime, options
    finally:
        runtime.stop()


# each look asks the store on moto's server: twice a second is enough
wait_for = partial(support.wait_for, every=0.5)


def explain(runtime, job_id):
    """What every unfinished task is doing, for a failure message."""
    store = runtime.cp.store
    lines = []
    for task in store.list_tasks(job_id, None, 100, None)[0]:
        if task.state == "SUCCEEDED":
            continue
        instance = runtime.instances.get(task.instance_id or "")
        events = [(e.kind, e.attempt, e.at.strftime("%H:%M:%S")) for e in store.timeline(job_id, 1000)
                  if e.index == task.index][-5:]
        lines.append(f"task {task.index} {task.state} attempt {task.attempt} desired {task.desired} "
                     f"instance {task.instance_id} agent-exit {instance.process.poll() if instance else '-'} "
                     f"heartbeat {task.last_heartbeat_at} reason {task.reason!r} events {events}")
    return "\n".join(lines)


def one_counting_task_running(runtime, limit):
    """Submits a job of one task counting the primes below `limit` (no combine step) and waits until it runs:
    the job, and its task then."""
    from spotrun.jobs import submit_job

    spec = demo.job_spec(limit, 1)
    del spec["combine"]
    job, _ = submit_job(runtime.cp, spec, "test")
    store = runtime.cp.store
    return job, wait_for(lambda: (t := store.get_task(job.job_id, 0)).state == "RUNNING" and t, 90, "the task to run")


def test_an_agent_killed_without_warning_is_found_by_the_reaper_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    with steady_runtime(tmp_path, monkeypatch) as (runtime, options):
        job, running = one_counting_task_running(runtime, 30_000_000)
        store = runtime.cp.store
        # ask for a checkpoint now (as a rebalance recommendation would) rather than wait for the interval
        store.request_checkpoint(job.job_id, 0, running.attempt, runtime.cp.clock())
        first = wait_for(lambda: (t := store.get_task(job.job_id, 0)).checkpoint and t, 90, "a first checkpoint",
                         lambda: explain(runtime, job.job_id))
        runtime.kill_agent(first.instance_id)
        killed_at = time.monotonic()
        resumed = wait_for(lambda: (t := store.get_task(job.job_id, 0)).attempt > first.attempt and t, 120,
                           "the reaper to declare the attempt lost")
        assert time.monotonic() - killed_at >= options.heartbeat_stale_seconds  # confirmed, not hasty
        done = wait_for(lambda: store.get_job(job.job_id).state in (JobState.SUCCEEDED, JobState.FAILED)
                        and store.get_job(job.job_id), 300, "the job to finish", lambda: explain(runtime, job.job_id))
        assert done.state == JobState.SUCCEEDED
        events = store.timeline(job.job_id, 500)
        restored = [e for e in events if e.kind == "CheckpointRestored"]
        assert restored and restored[0].attempt == resumed.attempt
        committed_before_kill = [e.detail["seq"] for e in events if e.kind == "CheckpointCommitted"
                                 and e.attempt == first.attempt]
        assert restored[0].detail["seq"] == max(committed_before_kill)
        assert any(e.kind == "EnvironmentFault" and "heartbeats stopped" in e.detail.get("reason", "") for e in events)
        count = json.loads(runtime.session.client("s3").get_object(
            Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job.job_id}/outputs/0/count.json")["Body"].read())
        assert count["primes"] == demo.sieve_count(30_000_000)


def test_a_finished_agent_takes_the_next_queued_task_instead_of_a_new_instance_booting(tmp_path, monkeypatch):
    with steady_runtime(tmp_path, monkeypatch) as (runtime, options):
        from spotrun.jobs import submit_job

        spec = demo.job_spec(3_000_000, 6)
        spec["max_concurrency"] = 2
        job, _ = submit_job(runtime.cp, spec, "test")
        store = runtime.cp.store
        done = wait_for(lambda: store.get_job(job.job_id).state in (JobState.SUCCEEDED, JobState.FAILED)
                        and store.get_job(job.job_id), 300, "the job to finish", lambda: explain(runtime, job.job_id))
        assert done.state == JobState.SUCCEEDED
        events = store.timeline(job.job_id, 500)
        reused = [e for e in events if e.kind == "TaskLaunching" and "reused_instance" in e.detail]
        assert reused, "some task ran on an instance that had finished another"
        assert len(runtime.instances) < 7  # 6 tasks + the combine on fewer boots than tasks
        result = json.loads(runtime.session.client("s3").get_object(
            Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job.job_id}/outputs/6/result.json")["Body"].read())
        assert result["primes"] == demo.sieve_count(3_000_000)
        # the concurrency cap held throughout: never more than 2 tasks started and not yet finished
        assert max(_running_over_time(events)) <= 2


def _running_over_time(events):
    running, levels = set(), [0]
    for event in sorted(events, key=lambda e: e.at):
        if event.kind == "TaskStarted":
            running.add(event.index)
        elif event.kind in ("TaskSucceeded", "TaskFailed", "TaskInterrupted", "EnvironmentFault", "TaskCancelled"):
            running.discard(event.index)
        levels.append(len(running))
    return levels


def test_suspend_checkpoints_and_releases_the_instance_and_resume_continues_from_there(tmp_path, monkeypatch):
    with steady_runtime(tmp_path, monkeypatch) as (runtime, options):
        from spotrun.jobs import control_job

        job, running = one_counting_task_running(runtime, 12_000_000)
        store = runtime.cp.store
        control_job(runtime.cp, job.job_id, "suspend")
        wait_for(lambda: store.get_job(job.job_id).state == JobState.SUSPENDED, 90, "the job to suspend",
                 lambda: explain(runtime, job.job_id))
        suspended = store.get_task(job.job_id, 0)
        assert suspended.state == "SUSPENDED" and suspended.checkpoint is not None
        assert suspended.checkpoint.attempt == running.attempt  # the final checkpoint taken on suspend
        wait_for(lambda: runtime.cp.compute.statuses([running.instance_id])[running.instance_id].state
                 in ("shutting-down", "terminated"), 30, "the instance to be released")
        control_job(runtime.cp, job.job_id, "resume")
        done = wait_for(lambda: store.get_job(job.job_id).state in (JobState.SUCCEEDED, JobState.FAILED)
                        and store.get_job(job.job_id), 300, "the job to finish", lambda: explain(runtime, job.job_id))
        assert done.state == JobState.SUCCEEDED
        restored = [e for e in store.timeline(job.job_id, 500) if e.kind == "CheckpointRestored"]
        assert restored and restored[0].detail["seq"] == suspended.checkpoint.seq
        count = json.loads(runtime.session.client("s3").get_object(
            Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job.job_id}/outputs/0/count.json")["Body"].read())
        assert count["primes"] == demo.sieve_count(12_000_000)
