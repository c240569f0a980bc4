"""Every function whose use cases launch (or terminate) instances may do so (its FunctionDef has the
ec2:launch or ec2:terminate grant, which the stack turns into the conditioned policies): each handler is
run on a case where it does, with the compute recording the calls. moto checks no IAM: without this, a
missing grant shows only on AWS.

Found with this test: the reaper's reconcile of every open job (which repairs a lost wake-up message)
admits and launches, and the reaper had no launch permission: on AWS that sweep failed with
UnauthorizedOperation exactly when it had something to repair; and the scheduler (cancelling launching
tasks) and the interruption handler (ending a lost attempt's instance) could not terminate."""

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


def test_the_functions_that_terminate_are_the_ones_allowed_to(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    ended: dict[str, int] = {}
    calls: list[list[str]] = []
    terminate = cp.compute.terminate
    cp.compute.terminate = lambda ids: (calls.append(list(ids)), terminate(ids))[1]

    # the scheduler ends the launching tasks of a cancelled job
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 3})
    job_id = accepted["job_id"]
    loop.drain()
    lost, finished = loop.task(job_id, 1), loop.task(job_id, 2)
    for task in (lost, finished):
        claim(cp, ref(task))

    # the interruption handler ends a lost attempt's instance
    calls.clear()
    state_change = eventbridge_event("EC2 Instance State-change Notification",
                                     {"instance-id": lost.instance_id, "state": "stopping"}, at=clock())
    interruption.handler(sqs_event(json.dumps(state_change)), context, control=cp)
    ended["interruption"] = len(calls)

    # the finisher ends a finished attempt's instance
    calls.clear()
    report = CompletionReport(job_id=job_id, index=2, attempt=finished.attempt, instance_id=finished.instance_id,
                              sent_at=clock(), outcome="completed", program={"exit_code": 0})
    finisher.handler(sqs_event(report.model_dump_json()), context, control=cp)
    ended["finisher"] = len(calls)

    calls.clear()
    loop.api("POST", f"/jobs/{job_id}/cancel")
    message = ControlMessage(type="JobControl", job_id=job_id).model_dump_json()
    scheduler.handler(sqs_event(sns_envelope(message, "JobControl")), context, control=cp)
    ended["scheduler"] = len(calls)

    doing = {key for key, n in ended.items() if n}
    allowed = {f.key for f in resources.FUNCTIONS if "ec2:terminate" in f.grants}
    assert doing == {"scheduler", "interruption", "finisher"} and doing <= allowed, (ended, allowed)
    assert "api" not in allowed and "worker-api" not in allowed and "heartbeat" not in allowed
