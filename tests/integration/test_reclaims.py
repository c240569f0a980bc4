"""A spot reclaim is a reclaim whichever signal reports it first: the two-minute warning (best effort),
the instance's state change, or the reaper finding its heartbeats stopped. EC2 says which it was (the
instance's state reason `Server.SpotInstanceTermination`); events shaped as AWS documents them, moto
as EC2, the instance terminated as Spot terminates it (spotrun_local.moto_ec2.reclaim)."""

from __future__ import annotations

from typing import Any

import pytest

from spotrun.attempts import claim
from spotrun.domain.model import TaskState
from spotrun.reaping import sweep
from spotrun.scheduling import reconcile_job
from spotrun_local.moto_ec2 import reclaim
from tests.integration.test_task_flow import JOB, Loop, ref
from tests.support import eventbridge_event

WARNING = "EC2 Spot Instance Interruption Warning"
STATE_CHANGE = "EC2 Instance State-change Notification"


def running(loop: Loop, spec: dict[str, Any] | None = None) -> str:
    _, accepted = loop.api("POST", "/jobs", spec or JOB)
    loop.drain()
    job_id = accepted["job_id"]
    claim(loop.cp, ref(loop.task(job_id)))
    return job_id


def warned(loop: Loop, instance_id: str) -> None:
    loop.send("interruptions", eventbridge_event(WARNING, {"instance-id": instance_id, "instance-action": "terminate"},
                                                 at=loop.cp.clock()))
    loop.drain()


def terminated(loop: Loop, instance_id: str) -> None:
    loop.send("interruptions", eventbridge_event(STATE_CHANGE, {"instance-id": instance_id, "state": "terminated"},
                                                 at=loop.cp.clock()))
    loop.drain()


def outcome(loop: Loop, job_id: str, first_pool: str) -> dict[str, Any]:
    """What the task, its first attempt, its job and the pool say after the reclaim (the handover detail
    `draining_attempt` aside: only a warned attempt has a final checkpoint to hand over)."""
    task = loop.task(job_id)
    job = loop.cp.store.get_job(job_id)
    first = next(a for a in loop.cp.store.attempts(job_id, 0) if a.number == 1)
    pool = loop.cp.store.pool_stats([first_pool])[first_pool]
    return {
        "state": task.state, "attempt": task.attempt, "interruptions": task.interruptions,
        "environment_failures": task.environment_failures, "program_failures": task.program_failures,
        "consecutive": task.consecutive_environment_failures, "avoid": task.avoid_pools,
        "first_attempt": (first.outcome, first.scope), "pool_interruptions": pool.interruptions,
        "pool_failures": pool.failures, "pool_cooling": pool.cooldown_until is not None,
        "job_interruptions": sum(v for k, v in job.stats.items() if k.endswith("|interruptions")),
        "job_failures": sum(v for k, v in job.stats.items() if k.endswith("|failures")),
        "interrupted_events": [e.attempt for e in loop.cp.store.timeline(job_id, 100) if e.kind == "TaskInterrupted"],
    }


@pytest.mark.parametrize("order", ["warning, then state change", "state change, then warning",
                                   "state change alone", "reaper alone"])
def test_a_reclaim_ends_in_the_same_state_whichever_signal_comes_first(cp, env, aws, context, clock, order):
    loop = Loop(cp, env, aws, context)
    job_id = running(loop)
    task = loop.task(job_id)
    clock.advance(60)
    reclaim(task.instance_id)
    if order == "warning, then state change":
        warned(loop, task.instance_id)
        terminated(loop, task.instance_id)
    elif order == "state change, then warning":
        terminated(loop, task.instance_id)
        warned(loop, task.instance_id)  # late: the instance no longer serves its task
    elif order == "state change alone":
        terminated(loop, task.instance_id)
    else:
        clock.advance(cp.settings.heartbeat_stale_seconds + 1)
        assert sweep(cp).lost == [f"{job_id}/0#1"]
        loop.drain()
    assert outcome(loop, job_id, task.pool) == {
        "state": TaskState.LAUNCHING, "attempt": 2, "interruptions": 1, "environment_failures": 0,
        "program_failures": 0, "consecutive": 1, "avoid": (task.pool,), "first_attempt": ("interrupted", "environment"),
        "pool_interruptions": 1, "pool_failures": 0, "pool_cooling": True, "job_interruptions": 1, "job_failures": 0,
        "interrupted_events": [1],  # one event, naming the attempt that was interrupted
    }


def test_reclaims_alone_never_use_up_the_environment_budget(cp, env, aws, context, clock):
    """AWS calls the warning best effort: a task reclaimed more often than `retries.environment` without any
    warning used to fail from reclaims alone."""
    loop = Loop(cp, env, aws, context)
    job_id = running(loop, {**JOB, "retries": {"environment": 2}})
    for n in range(1, 5):
        task = loop.task(job_id)
        assert (task.state, task.attempt) == (TaskState.LAUNCHING if n > 1 else TaskState.RUNNING, n)
        if n > 1:
            claim(cp, ref(task))
        clock.advance(60)
        reclaim(task.instance_id)
        terminated(loop, task.instance_id)
    task = loop.task(job_id)
    assert task.state == TaskState.LAUNCHING and task.interruptions == 4 and task.environment_failures == 0


def test_an_instance_lost_for_another_reason_is_an_environment_fault(cp, env, aws, context, clock):
    """Terminated by someone's TerminateInstances (state reason Client.UserInitiatedShutdown): not spot's."""
    loop = Loop(cp, env, aws, context)
    job_id = running(loop)
    task = loop.task(job_id)
    cp.compute.client.terminate_instances(InstanceIds=[task.instance_id])
    terminated(loop, task.instance_id)
    after = loop.task(job_id)
    assert (after.interruptions, after.environment_failures) == (0, 1)
    kinds = [e.kind for e in cp.store.timeline(job_id, 100)]
    assert "EnvironmentFault" in kinds and "TaskInterrupted" not in kinds


@pytest.mark.parametrize("lost", ["before the call reached EC2", "after EC2 launched"])
def test_a_launch_whose_answer_was_lost_is_sent_again_with_its_token(cp, env, aws, context, clock, lost):
    """The scheduler's invocation died around its RunInstances: the task sat LAUNCHING without an instance
    for launch_stale_seconds (600 s), then lost an attempt of its environment budget. Now the reaper sends
    the same call again after relaunch_seconds, with the same client token: EC2 answers it with the
    instance the first call launched (no second one), or launches it now."""
    from spotrun_local.moto_ec2 import IdempotentEc2

    cp.compute = IdempotentEc2(cp.compute.client, cp.settings.launch_template_id, cp.settings.subnets)
    loop = Loop(cp, env, aws, context)
    real_run = cp.compute.client.run_instances

    def dying(**params):
        if lost == "after EC2 launched":
            real_run(**params)
        raise RuntimeError("the invocation died")

    cp.compute.client.run_instances = dying
    _, accepted = loop.api("POST", "/jobs", JOB)
    job_id = accepted["job_id"]
    with pytest.raises(RuntimeError, match="died"):
        reconcile_job(cp, job_id)  # the scheduler's invocation, dying after it admitted the task
    cp.compute.client.run_instances = real_run
    stuck = loop.task(job_id)
    assert (stuck.state, stuck.attempt, stuck.instance_id) == (TaskState.LAUNCHING, 1, None)
    clock.advance(cp.settings.relaunch_seconds + 1)
    report = sweep(cp)
    assert report.relaunched == [f"{job_id}/0#1"] and report.stuck_launches == []
    bound = loop.task(job_id)
    assert (bound.state, bound.attempt, bound.environment_failures) == (TaskState.LAUNCHING, 1, 0)
    instances = [i["InstanceId"] for r in cp.compute.client.describe_instances(
        Filters=[{"Name": "tag:spotrun:job", "Values": [job_id]}])["Reservations"] for i in r["Instances"]]
    assert instances == [bound.instance_id]  # one instance, whether the first call had launched it or not
    claim(cp, ref(bound))
    assert loop.task(job_id).state == TaskState.RUNNING


def test_an_interrupted_attempts_run_is_counted_to_its_final_report(cp, env, aws, context, clock):
    """Attempts ended by a warning counted 0 s of execution in the job's statistics."""
    from spotrun.domain.messages import CompletionReport

    loop = Loop(cp, env, aws, context)
    job_id = running(loop)
    task = loop.task(job_id)
    clock.advance(100)
    warned(loop, task.instance_id)  # replaced now: 100 s counted so far
    clock.advance(15)  # its final checkpoint, then its report: the program ran 112 s in all
    loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=1, instance_id=task.instance_id,
                                          sent_at=clock(), outcome="interrupted",
                                          program={"exec_seconds": 112.0}).model_dump_json())
    loop.drain()
    loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=1, instance_id=task.instance_id,
                                          sent_at=clock(), outcome="interrupted",
                                          program={"exec_seconds": 112.0}).model_dump_json())  # again: once
    loop.drain()
    stats = loop.api("GET", f"/jobs/{job_id}/stats")[1]
    assert stats["pools"][task.pool]["exec_seconds"] == 112.0 and stats["total"]["exec_seconds"] == 112.0
    assert cp.store.pool_stats([task.pool])[task.pool].exec_seconds == 112.0
