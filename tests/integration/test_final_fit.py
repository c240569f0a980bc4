"""A final checkpoint that would not fit the spot warning: the agent predicts it from what it measured,
checkpoints more often, and the task says so (API, timeline, CLI)."""

from __future__ import annotations

import base64
import json
import time
import zlib
from pathlib import Path
from typing import Any

from spotrun.attempts import claim
from spotrun.domain.spec import parse_spec
from spotrun_cli.render import render_events, render_tasks
from spotrun_worker import finalfit
from spotrun_worker.checkpoints import CheckpointCycle, checkpoint_prefix, restore
from spotrun_worker.routes import InProcessRoutes
from spotrun_worker.workspace import Workspace
from tests.integration.test_task_flow import JOB, Loop, ref

CAPTURE_SECONDS = 0.6


class SlowCapture:
    """A checkpointer whose capture takes a known time and writes a known amount."""

    method = "signal"
    supports_checkpoint = True
    pid = None

    def checkpoint(self, into: Path, timeout: float) -> list[Path]:
        time.sleep(CAPTURE_SECONDS)
        state = into / "state.bin"
        state.write_bytes(b"\1" * (1 << 20))
        return [state]


def cycle_for(loop: Loop, cp: Any, aws: Any, task: Any, tmp_path: Path, budget: float) -> CheckpointCycle:
    routes = InProcessRoutes(cp, task.instance_id, s3=aws.client("s3"))
    workspace = Workspace(tmp_path / f"work-{budget}", task.attempt).create()
    return CheckpointCycle(routes, cp.settings.bucket, ref(task), parse_spec(JOB), workspace, SlowCapture(),
                           cp.clock, 60.0, 30.0, final_budget_seconds=budget)


def test_a_final_checkpoint_that_would_not_fit_is_reported_and_the_interval_shortened(cp, env, aws, context, tmp_path):
    # Given a running task whose checkpoints take about 0.6 s, and a warning budget of 0.3 s
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", JOB)
    job_id = accepted["job_id"]
    loop.drain()
    task = claim(cp, ref(loop.task(job_id)))
    tight = cycle_for(loop, cp, aws, task, tmp_path, budget=0.3)
    roomy = cycle_for(loop, cp, aws, task, tmp_path, budget=100.0)
    assert tight.interval() == roomy.interval()  # nothing measured yet: nothing known

    # When the agent takes a periodic checkpoint
    assert tight.take() == 1

    # Then its prediction does not fit, and it checkpoints more often than when it would
    assert tight.final_fit is not None and not tight.final_fit.fits
    assert tight.final_fit.predicted_seconds >= CAPTURE_SECONDS
    assert roomy.take() == 2 and roomy.final_fit is not None and roomy.final_fit.fits
    roomy.cost.samples[:] = tight.cost.samples  # the same measured cost for both
    assert tight.interval() < roomy.interval() / 2
    assert tight.interval() == finalfit.checkpoint_interval(tight.cost.mean, tight.final_fit, 30.0)

    # And the task says so, in the API, the timeline and the CLI (the last commit is the roomy one's:
    # what the API shows follows the newest measurement)
    tight.take()
    status, tasks = loop.api("GET", f"/jobs/{job_id}/tasks")
    assert status == 200
    note = tasks["tasks"][0]["checkpoint"]["final_checkpoint"]
    predicted = tasks["tasks"][0]["checkpoint"]["predicted_final_seconds"]
    assert note == f"final checkpoint fits warning: no, predicted {predicted:.0f} s"
    assert tasks["tasks"][0]["checkpoint"]["final_fits_warning"] is False
    assert f"task 0: {note} (checkpointing more often)" in render_tasks(tasks["tasks"])
    _, timeline = loop.api("GET", f"/jobs/{job_id}/events")
    committed = [e for e in timeline["events"] if e["kind"] == "CheckpointCommitted"]
    assert [e["detail"]["final_fits_warning"] for e in committed] == [False, True, False]
    assert f"final_checkpoint={note}" in render_events(committed[-1:])
    # And the pool keeps the upload rates its agents measured, once per commit, for the broker
    stats = cp.store.pool_stats([task.pool])[task.pool]
    assert stats.upload_bytes == 3 * (1 << 20) and stats.upload_seconds > 0


def test_a_committed_checkpoint_comes_back_whole_by_parts(cp, env, aws, context, tmp_path):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    task = claim(cp, ref(loop.task(accepted["job_id"])))
    cycle = cycle_for(loop, cp, aws, task, tmp_path, budget=100.0)
    assert cycle.take() == 1
    manifest = json.loads(aws.client("s3").get_object(
        Bucket=cp.settings.bucket, Key=f"{checkpoint_prefix(ref(task), 1)}/manifest.json")["Body"].read())
    assert manifest["files"] == [{"name": "state.bin", "size": 1 << 20, "parts": [
        {"size": 1 << 20, "crc32": base64.b64encode(zlib.crc32(b"\1" * (1 << 20)).to_bytes(4, "big")).decode()}]}]
    restored = restore(cycle.routes, cp.settings.bucket, ref(task), cp.store.get_task(task.job_id, task.index),
                       Workspace(tmp_path / "elsewhere", task.attempt).create())
    assert restored is not None and restored[1] == 1
    assert (restored[0] / "state.bin").read_bytes() == b"\1" * (1 << 20)
