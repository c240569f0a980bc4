"""Jobs with a deadline: the scheduler's spot / on-demand / wait choice comes from the same policy
code the policy benchmark runs (spotrun.domain.policy.decide)."""

from __future__ import annotations

from datetime import timedelta

from spotrun.domain import policy
from spotrun.domain.model import Market, TaskState
from tests.integration.test_task_flow import JOB, Loop


def is_spot(cp, instance_id):
    found = cp.compute.client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found.get("InstanceLifecycle") == "spot"


def test_a_tight_deadline_runs_on_demand_because_the_policy_says_so(cp, env, aws, context, clock, monkeypatch):
    decisions = []
    real = policy.decide
    monkeypatch.setattr(policy, "decide", lambda state, *a: decisions.append((state, real(state, *a))) or decisions[-1][1])
    loop = Loop(cp, env, aws, context)
    deadline = clock() + timedelta(hours=2, minutes=20)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "deadline": deadline.isoformat(), "task_runtime": "2h"})
    loop.drain()
    task = loop.task(accepted["job_id"])
    assert decisions, "the scheduler consulted the deadline policy"
    state, decision = decisions[-1]
    assert state.work_remaining == timedelta(hours=2) and state.deadline == deadline
    assert decision.action == policy.Action.ON_DEMAND
    assert task.market == Market.ON_DEMAND and task.state == TaskState.LAUNCHING
    assert not is_spot(cp, task.instance_id)
    launching = [e for e in cp.store.timeline(accepted["job_id"], 50) if e.kind == "TaskLaunching"]
    assert "deadline policy" in launching[-1].detail["broker"]


def test_a_loose_deadline_runs_on_spot(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    deadline = clock() + timedelta(hours=30)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "deadline": deadline.isoformat(), "task_runtime": "2h"})
    loop.drain()
    task = loop.task(accepted["job_id"])
    assert task.market == Market.SPOT and is_spot(cp, task.instance_id)
