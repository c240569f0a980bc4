"""Every function whose use cases launch instances may launch them (its FunctionDef has the ec2:launch
grant, which the stack turns into the RunInstances policy), and no other function: each handler is run
on a case where it launches, with the compute recording the calls.

Found with this test: the reaper's reconcile of every open job (which repairs a lost wake-up message)
admits and launches, and the reaper had no launch permission: on AWS that sweep failed with
UnauthorizedOperation exactly when it had something to repair."""

from __future__ import annotations

import json
from typing import Any

from spotrun import resources
from spotrun.attempts import claim
from spotrun.domain.messages import CompletionReport, ControlMessage
from spotrun.handlers import finisher, interruption, reaper, scheduler
from tests.fuzz.support import sns_envelope, sqs_event
from tests.integration.test_task_flow import JOB, Loop, ref
from tests.support import eventbridge_event


def recording(cp: Any) -> list[str]:
    calls: list[str] = []
    launch = cp.compute.launch

    def recorded(request: Any) -> Any:
        calls.append(request.token)
        return launch(request)

    cp.compute.launch = recorded
    return calls


def test_the_functions_that_launch_are_the_ones_allowed_to(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    launched: dict[str, int] = {}

    # the scheduler admits a submitted job
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 2})
    job_id = accepted["job_id"]
    calls = recording(cp)
    message = ControlMessage(type="JobSubmitted", job_id=job_id).model_dump_json()
    scheduler.handler(sqs_event(sns_envelope(message)), context, control=cp)
    launched["scheduler"] = len(calls)

    # the interruption handler replaces a warned attempt at once
    task = loop.task(job_id, 0)
    claim(cp, ref(task))
    calls.clear()
    warning = eventbridge_event("EC2 Spot Instance Interruption Warning",
                                {"instance-id": task.instance_id, "instance-action": "terminate"}, at=clock())
    interruption.handler(sqs_event(json.dumps(warning)), context, control=cp)
    launched["interruption"] = len(calls)

    # the finisher ends an attempt (the queued work it frees is the scheduler's to launch)
    other = loop.task(job_id, 1)
    claim(cp, ref(other))
    calls.clear()
    report = CompletionReport(job_id=job_id, index=1, attempt=other.attempt, instance_id=other.instance_id,
                              sent_at=clock(), outcome="environment_error", reason="disk full")
    finisher.handler(sqs_event(report.model_dump_json()), context, control=cp)
    launched["finisher"] = len(calls)

    # the reaper's reconcile launches what a lost wake-up message left queued (the finisher's was lost)
    calls.clear()
    reaper.handler({}, context, control=cp)
    launched["reaper"] = len(calls)

    doing = {key for key, n in launched.items() if n}
    allowed = {f.key for f in resources.FUNCTIONS if "ec2:launch" in f.grants}
    assert doing == {"scheduler", "interruption", "reaper"} and doing <= allowed, (launched, allowed)
    assert "finisher" not in allowed and "api" not in allowed and "worker-api" not in allowed
