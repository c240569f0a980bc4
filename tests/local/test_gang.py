"""A gang task through the local runtime for real: two local instances (namespaces of their own, a loopback
address each) run a ring all-reduce over TCP, checkpointed together with `signal`; a spot warning to one
of them saves the gang, a new gang replaces it and resumes, and the result is an uninterrupted run's."""

from __future__ import annotations

import json
import sys

import pytest

from spotrun.domain.model import JobState
from spotrun.jobs import submit_job
from spotrun_local.programs import ring
from tests.local.test_end_to_end import steady_runtime, wait_for

pytestmark = pytest.mark.slow

STEPS, SIZE, SLEEP = 260, 64, 0.1


def ring_job(method: str = "signal") -> dict:
    return {
        "name": "ring" if method == "signal" else f"ring-{method}", "nodes": 2, "outputs": ["result.json"],
        "command": [sys.executable, ring.__file__, "--steps", str(STEPS), "--size", str(SIZE), "--sleep", str(SLEEP)],
        "checkpoint": {"method": method, "interval": 3600},
        "retries": {"environment": 3},
    }


def explain(runtime, job_id):
    store = runtime.cp.store
    task = store.get_task(job_id, 0)
    events = [(e.kind, e.attempt, e.detail.get("rank"), e.at.strftime("%H:%M:%S")) for e in store.timeline(job_id, 200)]
    return f"task {task.state} attempt {task.attempt} instances {task.gang_instances} reason {task.reason!r} {events}"


def warn_rank_1_of_a_checkpointed_gang(runtime, spec, checkpoint_within, finish_within):
    """Submits the gang `spec`; once it runs, asks it for a gang checkpoint (so that the warning's final one is
    not the only one) and, once that is committed, warns rank 1's instance only; waits for the job to end.
    The job's id, its task as it first ran, as checkpointed, and in the end (the job SUCCEEDED)."""
    job, _ = submit_job(runtime.cp, spec, "test")
    store = runtime.cp.store
    first = wait_for(lambda: (t := store.get_task(job.job_id, 0)).state == "RUNNING" and t.progress and t, 120,
                     "the gang to run", lambda: explain(runtime, job.job_id))
    store.request_checkpoint(job.job_id, 0, first.attempt, runtime.cp.clock())
    saved = wait_for(lambda: (t := store.get_task(job.job_id, 0)).checkpoint and t, checkpoint_within,
                     "a gang checkpoint", lambda: explain(runtime, job.job_id))
    runtime.interrupt(first.gang_instances[1])
    done = wait_for(lambda: (j := store.get_job(job.job_id)).state in (JobState.SUCCEEDED, JobState.FAILED) and j,
                    finish_within, "the gang to finish", lambda: explain(runtime, job.job_id))
    assert done.state == JobState.SUCCEEDED, explain(runtime, job.job_id)
    return job.job_id, first, saved, store.get_task(job.job_id, 0)


def assert_replaced_once_from_the_final_gang_checkpoint(runtime, job_id, first, final):
    """One interruption; the new gang (the next attempt, on other instances) restored the old gang's final
    checkpoint of both ranks; the old gang's instances ended. The job's timeline."""
    events = runtime.cp.store.timeline(job_id, 500)
    kinds = [e.kind for e in events]
    assert kinds.count("TaskInterrupted") == 1 and final.interruptions == 1, explain(runtime, job_id)
    assert final.attempt == first.attempt + 1 and not set(final.gang_instances) & set(first.gang_instances)
    committed = [e for e in events if e.kind == "CheckpointCommitted"]
    assert all(e.detail["ranks"] == 2 for e in committed) and len(committed) >= 2
    final_checkpoint = max(e.detail["seq"] for e in committed if e.attempt == first.attempt)
    restored = [e for e in events if e.kind == "CheckpointRestored"]
    assert [e.detail["seq"] for e in restored] == [final_checkpoint] and restored[0].attempt == final.attempt
    # the old gang's instances are gone: nothing of it bills after the handover
    wait_for(lambda: all(runtime.instances[i].killed for i in first.gang_instances), 30, "the old gang to end")
    result = json.loads(runtime.session.client("s3").get_object(
        Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job_id}/outputs/0/result.json")["Body"].read())
    assert result == {"nodes": 2, "steps": STEPS, "digest": ring.reference(2, STEPS, SIZE)}
    return events


def test_a_warned_gang_member_saves_the_gang_which_is_replaced_and_resumes_correctly(tmp_path, monkeypatch):
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _options):
        job_id, first, saved, final = warn_rank_1_of_a_checkpointed_gang(runtime, ring_job(), 60, 240)
        assert len(first.gang_instances) == 2 and first.instance_id == first.gang_instances[0]
        ranks = [runtime.cp.store.worker(i) for i in first.gang_instances]
        assert [w.rank for w in ranks] == [0, 1] and len({w.pool for w in ranks}) == 1  # one pool, one zone
        addresses = {runtime.instances[i].address for i in first.gang_instances}
        assert len(addresses) == 2  # each node its own address
        assert saved.checkpoint.ranks == 2
        events = assert_replaced_once_from_the_final_gang_checkpoint(runtime, job_id, first, final)
        # the gang's result is rank 0's: its outputs and its log are there whichever rank ended first
        logs = [o["Key"] for o in runtime.session.client("s3").list_objects_v2(
            Bucket=runtime.cp.settings.bucket, Prefix=f"jobs/{job_id}/logs/0/").get("Contents", [])]
        assert f"jobs/{job_id}/logs/0/attempt-{final.attempt}.log" in logs, logs
        assert any(e.kind == "RankEnded" and e.detail["rank"] == 1 for e in events)
        stats = runtime.cp.store.get_job(job_id).stats
        instance_seconds = sum(v for k, v in stats.items() if k.endswith("|instance_seconds"))
        interruptions = sum(v for k, v in stats.items() if k.endswith("|interruptions"))
        assert interruptions == 1
        ran = (final.finished_at - first.launched_at).total_seconds()
        assert instance_seconds > 1.5 * ran  # two instances' time, not one's
