"""The operators' metrics (Powertools EMF, as the handlers print them to CloudWatch Logs): launches and
capacity refusals per pool, interruptions per pool, checkpoint seconds and MiB, restore seconds, the
time from a warning to running again, work lost per interruption, tasks by state and spend per hour.
Each is read back from what the real handlers printed while one job went through a refusal, a
checkpoint, a spot interruption, a restore and a sweep."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from spotrun.attempts import claim
from spotrun.domain.launches import LaunchResult
from spotrun.domain.messages import CompletionReport
from spotrun.handlers import finisher, interruption, reaper
from spotrun_local.moto_ec2 import reclaim
from tests.integration.test_scheduled_changes import health_event
from tests.integration.test_task_flow import JOB, Loop, ref
from tests.integration.test_worker_routes import call as worker_call
from tests.support import eventbridge_event


@dataclass(frozen=True)
class Point:
    name: str
    value: float
    unit: str
    dimensions: dict[str, str]


def points(captured: str) -> list[Point]:
    """Every metric value in the EMF documents printed, with its unit and dimensions."""
    found = []
    for line in captured.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "spotrun"
            dimensions = {name: document[name] for names in directive["Dimensions"] for name in names}
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                for value in values if isinstance(values, list) else [values]:
                    found.append(Point(metric["Name"], value, metric.get("Unit", ""), dimensions))
    return found


def named(found: list[Point], name: str, **dimensions: str) -> list[Point]:
    return [p for p in found if p.name == name and p.dimensions == {"service": "spotrun", **dimensions}]


class RefuseFirstLaunch:
    """EC2 without capacity in the first pool the broker tries (once), then moto's EC2."""

    def __init__(self, compute: Any):
        self.compute, self.refused = compute, []

    def launch(self, request: Any) -> LaunchResult:
        if not self.refused:
            self.refused.append(f"{request.instance_type}@{request.zone}")
            return LaunchResult(error_code="InsufficientInstanceCapacity", error_message="none here")
        return self.compute.launch(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compute, name)


def test_the_handlers_emit_what_the_operators_dashboard_graphs(cp, env, aws, context, clock, capsys):
    cp.compute = RefuseFirstLaunch(cp.compute)
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 2})
    job_id = accepted["job_id"]
    capsys.readouterr()
    loop.drain()  # the scheduler: the first pool refuses, the next one launches both
    launched = points(capsys.readouterr().out)
    refused_pool = cp.compute.refused[0]
    first, second = cp.store.get_task(job_id, 0), cp.store.get_task(job_id, 1)
    assert named(launched, "CapacityRefusals", pool=refused_pool)[0].value == 1
    assert named(launched, "Launches", pool=first.pool)[0].value == 2
    assert named(launched, "Launches")[0].value == 2 and named(launched, "CapacityRefusals")[0].value == 1

    # Both claim; the first commits a 3 MiB checkpoint that took 4.5 s to capture and upload.
    for task in (first, second):
        assert worker_call(cp, context, "claim", {"attempt": task.attempt}, task.instance_id)[0] == 200
    assert not named(points(capsys.readouterr().out), "RecoverySeconds")  # first attempts recover from nothing
    commit = {"attempt": first.attempt, "seq": 1, "size_bytes": 3 * 2**20, "method": "signal",
              "committed_at": clock().isoformat(), "seconds": 4.5}
    assert worker_call(cp, context, "checkpoint", commit, first.instance_id) == (200, {"committed": True})
    committed = points(capsys.readouterr().out)
    assert named(committed, "CheckpointSeconds")[0].value == 4.5
    assert named(committed, "CheckpointMiB")[0].value == 3.0

    # A spot warning for the first task's instance: an interruption in its pool, a replacement launched.
    clock.advance(60)
    warning = eventbridge_event("EC2 Spot Instance Interruption Warning",
                                {"instance-id": first.instance_id, "instance-action": "terminate"}, at=clock())
    assert interruption.handler(_sqs(json.dumps(warning)), context, control=cp) == {"batchItemFailures": []}
    warned = points(capsys.readouterr().out)
    replacement = cp.store.get_task(job_id, 0)
    assert named(warned, "Interruptions", pool=first.pool)[0].value == 1
    assert named(warned, "Launches", pool=replacement.pool)[0].value == 1

    # The interrupted attempt reports after its final checkpoint: 7.25 s of work since it was lost.
    clock.advance(5)
    report = CompletionReport(job_id=job_id, index=0, attempt=first.attempt, instance_id=first.instance_id, sent_at=clock(),
                              outcome="interrupted", unsaved_seconds=7.25, checkpoint_seq=1)
    assert finisher.handler(_sqs(report.model_dump_json()), context, control=cp) == {"batchItemFailures": []}
    assert named(points(capsys.readouterr().out), "WorkLostSeconds")[0].value == 7.25

    # The replacement claims 40 s after the warning, restores in 2 s: running again 42 s after it.
    clock.advance(35)
    assert worker_call(cp, context, "claim", {"attempt": replacement.attempt}, replacement.instance_id)[0] == 200
    assert not named(points(capsys.readouterr().out), "RecoverySeconds")  # it restores first
    clock.advance(2)
    restored = {"attempt": replacement.attempt, "seq": 1, "from_attempt": first.attempt, "seconds": 2.0}
    assert worker_call(cp, context, "restored", restored, replacement.instance_id)[0] == 200
    recovered = points(capsys.readouterr().out)
    assert named(recovered, "RestoreSeconds")[0].value == 2.0
    assert named(recovered, "RecoverySeconds")[0].value == pytest.approx(42.0)

    # The second task has no checkpoint: its replacement runs again at its claim, and says so then.
    clock.advance(10)
    warning = eventbridge_event("EC2 Spot Instance Interruption Warning",
                                {"instance-id": second.instance_id, "instance-action": "terminate"}, at=clock())
    assert interruption.handler(_sqs(json.dumps(warning)), context, control=cp) == {"batchItemFailures": []}
    capsys.readouterr()
    clock.advance(25)
    again = cp.store.get_task(job_id, 1)
    assert worker_call(cp, context, "claim", {"attempt": again.attempt}, again.instance_id)[0] == 200
    assert named(points(capsys.readouterr().out), "RecoverySeconds")[0].value == pytest.approx(25.0)

    # The reaper's minute: tasks of open jobs per state, and what the running instances cost per hour.
    reaper.handler({}, context, control=cp)
    swept = points(capsys.readouterr().out)
    assert named(swept, "Tasks", state="RUNNING")[0].value == 2
    assert named(swept, "Tasks", state="QUEUED")[0].value == 0
    spot = named(swept, "SpendPerHour", market="spot")[0].value
    task_prices = [cp.store.get_task(job_id, i).price_per_hour for i in (0, 1)]  # the replacements' instances
    assert spot == pytest.approx(sum(task_prices)) and spot > 0
    assert named(swept, "SpendPerHour", market="on-demand")[0].value == 0
    assert named(swept, "OnDemandEquivalentPerHour")[0].value > spot


def test_reclaims_the_reaper_finds_and_scheduled_moves_are_interruptions_of_their_pool(cp, env, aws, context, clock,
                                                                                      capsys):
    """A reclaim without a warning (the reaper finds the attempt lost, EC2 says Spot took it) and a move off an
    instance a scheduled change will take are interruptions of the pool too, and their replacements' launches
    count; an instance someone else terminated is an environment fault, no interruption."""
    loop = Loop(cp, env, aws, context)
    jobs = [running(loop) for _ in range(4)]
    reclaimed, moved, terminated, moved_later = (loop.task(job_id) for job_id in jobs)
    capsys.readouterr()

    cp.compute.client.terminate_instances(InstanceIds=[terminated.instance_id])
    state_change = eventbridge_event("EC2 Instance State-change Notification",
                                     {"instance-id": terminated.instance_id, "state": "terminated"}, at=clock())
    assert interruption.handler(_sqs(json.dumps(state_change)), context, control=cp) == {"batchItemFailures": []}
    faulted = points(capsys.readouterr().out)
    assert not named(faulted, "Interruptions") and loop.task(terminated.job_id).environment_failures == 1

    change = health_event(moved.instance_id, clock() - timedelta(minutes=5), "open")  # under way: move at once
    assert interruption.handler(_sqs(json.dumps(change)), context, control=cp) == {"batchItemFailures": []}
    at_once = points(capsys.readouterr().out)
    assert named(at_once, "Interruptions", pool=moved.pool)[0].value == 1
    assert named(at_once, "Launches")[0].value == 1  # its replacement

    lead = cp.settings.scheduled_move_lead_seconds
    later = health_event(moved_later.instance_id, clock() + timedelta(seconds=lead + 60))  # the reaper moves it
    assert interruption.handler(_sqs(json.dumps(later)), context, control=cp) == {"batchItemFailures": []}
    assert not named(points(capsys.readouterr().out), "Interruptions")  # not yet

    reclaim(reclaimed.instance_id)
    clock.advance(max(cp.settings.heartbeat_stale_seconds + 1, 61))
    cp.store.record_beat(moved_later.job_id, 0, 1, clock())
    reaper.handler({}, context, control=cp)
    swept = points(capsys.readouterr().out)
    interrupted = Counter({p.dimensions["pool"]: int(p.value) for p in swept
                           if p.name == "Interruptions" and "pool" in p.dimensions})
    assert interrupted == Counter([reclaimed.pool, moved_later.pool])
    assert named(swept, "Interruptions")[0].value == 2
    # The sweep launched the reclaimed task's replacement, the terminated one's retry (its scheduler message
    # is still in the queue) and the due move's replacement: each launch counts once, in its pool.
    relaunched = [loop.task(job_id) for job_id in (reclaimed.job_id, terminated.job_id, moved_later.job_id)]
    assert [(t.attempt, bool(t.instance_id)) for t in relaunched] == [(2, True)] * 3
    per_pool = Counter({p.dimensions["pool"]: int(p.value) for p in swept
                        if p.name == "Launches" and "pool" in p.dimensions})
    assert per_pool == Counter(t.pool for t in relaunched)
    assert named(swept, "Launches")[0].value == 3


def running(loop: Loop) -> str:
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    job_id = accepted["job_id"]
    claim(loop.cp, ref(loop.task(job_id)))
    return job_id


def _sqs(*bodies: str) -> dict[str, Any]:
    from tests.fuzz.support import sqs_event

    return sqs_event(*bodies)
