"""The default checkpointer for real, end to end: a `bc -l` job computing digits of pi with DMTCP (the
method a job gets when it names none) through the local runtime, interrupted twice by spot warnings,
restored each time on another instance in its own namespaces, its uploaded pi.txt byte for byte an
uninterrupted run's."""

from __future__ import annotations

import subprocess
import time

import pytest

from spotrun.domain.model import JobState
from spotrun.domain.spec import JobSpec
from spotrun.jobs import submit_job
from tests.local.test_end_to_end import explain, steady_runtime, wait_for

pytestmark = pytest.mark.slow
DIGITS = 6000  # 20-40 s of bc on these machines: two interruptions 3 s into an attempt land mid-computation
COMMAND = f"echo 'scale={DIGITS}; 4*a(1)' | bc -l > pi.txt"


def test_a_bc_job_with_the_default_checkpointer_survives_two_interruptions(tmp_path, monkeypatch, dmtcp_bin):
    monkeypatch.delenv("SPOTRUN_DMTCP_BIN", raising=False)  # the runtime finds make dmtcp's build itself
    spec = {"name": "pi", "command": COMMAND, "outputs": ["pi.txt"], "retries": {"program": 0, "environment": 5},
            "resources": {"vcpus": 2, "memory_gib": 2}}
    assert JobSpec.model_validate(spec).checkpoint.method == "dmtcp"
    reference = tmp_path / "reference"
    reference.mkdir()
    uninterrupted = subprocess.Popen(COMMAND, shell=True, cwd=reference)  # alongside, to save the suite's time
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _):
        job, _ = submit_job(runtime.cp, spec, "test")
        store = runtime.cp.store

        def started(attempt: int):
            return [e for e in store.timeline(job.job_id, 500) if e.kind == "TaskStarted" and e.attempt == attempt]

        for attempt in (1, 2):
            wait_for(lambda a=attempt: started(a), 120, f"attempt {attempt} to start", lambda: explain(runtime, job.job_id))
            time.sleep(3)  # bc computes for a while on this instance (after the restore, from attempt 2 on)
            task = store.get_task(job.job_id, 0)
            assert task.attempt == attempt and task.state == "RUNNING", explain(runtime, job.job_id)
            runtime.interrupt(task.instance_id)
        done = wait_for(lambda: store.get_job(job.job_id).state in (JobState.SUCCEEDED, JobState.FAILED)
                        and store.get_job(job.job_id), 240, "the job to finish", lambda: explain(runtime, job.job_id))
        assert done.state == JobState.SUCCEEDED, explain(runtime, job.job_id)

        events = store.timeline(job.job_id, 500)
        restored = [e for e in events if e.kind == "CheckpointRestored"]
        assert [e.attempt for e in restored] == [2, 3]
        for event in restored:  # each replacement resumed the final checkpoint of the attempt before it
            before = [c.detail["seq"] for c in events if c.kind == "CheckpointCommitted" and c.attempt == event.attempt - 1]
            assert event.detail == {"seq": max(before), "from_attempt": event.attempt - 1}
        commits = [e for e in events if e.kind == "CheckpointCommitted"]
        assert len(commits) >= 2 and all(e.detail["method"] == "dmtcp" for e in commits)
        interrupted = [e for e in events if e.kind == "AttemptEnded" and e.attempt in (1, 2)]
        assert len(interrupted) == 2, [(e.kind, e.attempt, e.detail) for e in events]
        instances = [e.detail["instance"] for e in events if e.kind == "TaskStarted"]
        assert len(instances) == 3 == len(set(instances))  # three instances, one per attempt
        assert runtime.counters.warnings == 2

        uploaded = runtime.session.client("s3").get_object(
            Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job.job_id}/outputs/0/pi.txt")["Body"].read()
        # each instance wrote into its own work directory; the digits are where the last one uploaded them
        homes = [runtime.options.root / "instances" / i / "work" / job.job_id / "0" / "pi.txt" for i in instances]
        assert homes[-1].read_bytes() == uploaded
        assert all(not home.exists() or home.stat().st_size == 0 for home in homes[:-1])

    assert uninterrupted.wait(timeout=300) == 0
    expected = (reference / "pi.txt").read_bytes()
    assert expected.startswith(b"3.14159265358979323846") and len(expected) > DIGITS
    assert uploaded == expected
