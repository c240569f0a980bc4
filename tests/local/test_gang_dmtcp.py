"""A gang under DMTCP through the local runtime for real: two local instances (a PID and mount namespace
each, a loopback address each, a DMTCP_TMPDIR each) run the ring all-reduce over TCP with
`checkpoint.method: dmtcp`, every rank's processes under one coordinator on rank 0. A spot warning to rank 1
makes rank 0 checkpoint the gang (one `dmtcp_command -c`), each rank uploads its images, a new gang on
new instances restores them against a new coordinator, its connections included, and the result is an
uninterrupted run's. Needs DMTCP with spotrun's gang patch (the suite's build has it)."""

from __future__ import annotations

import json
import sys

import pytest

from spotrun.domain.model import JobState
from spotrun.jobs import submit_job
from spotrun_local.programs import ring
from tests.local.test_end_to_end import steady_runtime, wait_for
from tests.local.test_gang import explain

pytestmark = pytest.mark.slow

STEPS, SIZE, SLEEP = 260, 64, 0.1


def dmtcp_ring_job() -> dict:
    return {
        "name": "ring-dmtcp", "nodes": 2, "outputs": ["result.json"],
        "command": [sys.executable, ring.__file__, "--steps", str(STEPS), "--size", str(SIZE), "--sleep", str(SLEEP)],
        "checkpoint": {"method": "dmtcp", "interval": 3600},
        "retries": {"environment": 3},
    }


def test_a_warned_gang_member_under_dmtcp_saves_the_gang_which_is_replaced_and_resumes_correctly(
        tmp_path, monkeypatch, dmtcp_bin):
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(dmtcp_bin))
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _options):
        job, _ = submit_job(runtime.cp, dmtcp_ring_job(), "test")
        store = runtime.cp.store
        first = wait_for(lambda: (t := store.get_task(job.job_id, 0)).state == "RUNNING" and t.progress and t, 120,
                         "the gang to run", lambda: explain(runtime, job.job_id))
        assert len(first.gang_instances) == 2
        assert len({runtime.instances[i].address for i in first.gang_instances}) == 2  # each node its own address

        # a periodic-style gang checkpoint first (rank 0's dmtcp_command -c, both ranks' images)
        store.request_checkpoint(job.job_id, 0, first.attempt, runtime.cp.clock())
        saved = wait_for(lambda: (t := store.get_task(job.job_id, 0)).checkpoint and t, 90, "a gang checkpoint",
                         lambda: explain(runtime, job.job_id))
        assert saved.checkpoint.ranks == 2 and saved.checkpoint.method == "dmtcp"
        runtime.interrupt(first.gang_instances[1])  # a warning to rank 1 only
        done = wait_for(lambda: (j := store.get_job(job.job_id)).state in (JobState.SUCCEEDED, JobState.FAILED) and j,
                        300, "the gang to finish", lambda: explain(runtime, job.job_id))
        assert done.state == JobState.SUCCEEDED, explain(runtime, job.job_id)

        final = store.get_task(job.job_id, 0)
        events = store.timeline(job.job_id, 500)
        kinds = [e.kind for e in events]
        assert kinds.count("TaskInterrupted") == 1 and final.interruptions == 1, explain(runtime, job.job_id)
        assert final.attempt == first.attempt + 1 and not set(final.gang_instances) & set(first.gang_instances)
        committed = [e for e in events if e.kind == "CheckpointCommitted"]
        assert all(e.detail["ranks"] == 2 for e in committed) and len(committed) >= 2
        final_checkpoint = max(e.detail["seq"] for e in committed if e.attempt == first.attempt)
        restored = [e for e in events if e.kind == "CheckpointRestored"]
        assert [e.detail["seq"] for e in restored] == [final_checkpoint] and restored[0].attempt == final.attempt
        wait_for(lambda: all(runtime.instances[i].killed for i in first.gang_instances), 30, "the old gang to end")
        s3 = runtime.session.client("s3")
        bucket = runtime.cp.settings.bucket
        result = json.loads(s3.get_object(Bucket=bucket, Key=f"jobs/{job.job_id}/outputs/0/result.json")["Body"].read())
        assert result == {"nodes": 2, "steps": STEPS, "digest": ring.reference(2, STEPS, SIZE)}
        # the new gang went on from DMTCP's images, mid-run, over its restored connections: it never built
        # the ring again (a fresh start prints "ring up")
        log = s3.get_object(Bucket=bucket, Key=f"jobs/{job.job_id}/logs/0/attempt-{final.attempt}.log")["Body"].read()
        assert b"ring up" not in log and b"rank 0: done, 260 steps" in log, log[-2000:]
