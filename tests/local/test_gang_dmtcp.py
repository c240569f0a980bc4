"""A gang under DMTCP through the local runtime for real: two local instances (a PID and mount namespace
each, a loopback address each, a DMTCP_TMPDIR each) run the ring all-reduce over TCP with
`checkpoint.method: dmtcp`, every rank's processes under one coordinator on rank 0. A spot warning to rank 1
makes rank 0 checkpoint the gang (one `dmtcp_command -c`), each rank uploads its images, a new gang on
new instances restores them against a new coordinator, its connections included, and the result is an
uninterrupted run's. Needs DMTCP with spotrun's gang patch (the suite's build has it)."""

from __future__ import annotations

import pytest

from tests.local.test_end_to_end import steady_runtime
from tests.local.test_gang import (
    assert_replaced_once_from_the_final_gang_checkpoint,
    ring_job,
    warn_rank_1_of_a_checkpointed_gang,
)

pytestmark = pytest.mark.slow


def test_a_warned_gang_member_under_dmtcp_saves_the_gang_which_is_replaced_and_resumes_correctly(
        tmp_path, monkeypatch, dmtcp_bin):
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(dmtcp_bin))
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _options):
        # a periodic-style gang checkpoint first (rank 0's dmtcp_command -c, both ranks' images)
        job_id, first, saved, final = warn_rank_1_of_a_checkpointed_gang(runtime, ring_job("dmtcp"), 90, 300)
        assert len(first.gang_instances) == 2
        assert len({runtime.instances[i].address for i in first.gang_instances}) == 2  # each node its own address
        assert saved.checkpoint.ranks == 2 and saved.checkpoint.method == "dmtcp"
        assert_replaced_once_from_the_final_gang_checkpoint(runtime, job_id, first, final)
        s3 = runtime.session.client("s3")
        bucket = runtime.cp.settings.bucket
        # the new gang went on from DMTCP's images, mid-run, over its restored connections: it never built
        # the ring again (a fresh start prints "ring up")
        log = s3.get_object(Bucket=bucket, Key=f"jobs/{job_id}/logs/0/attempt-{final.attempt}.log")["Body"].read()
        assert b"ring up" not in log and b"rank 0: done, 260 steps" in log, log[-2000:]
