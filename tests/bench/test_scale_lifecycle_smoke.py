"""The scale benchmark's lifecycle and cost model, small and fast (a few seconds on moto): the bill it
models must count what a task really causes. Each of the agent's worker-route calls is an invocation of
the worker-api function, whose own requests are counted; the agent itself writes nothing but its beat;
an instance's end reaches the interruption function once."""

from __future__ import annotations

from typing import Any

import pytest

from bench.scale import cost, lifecycle
from spotrun import resources

# The agent's calls per phase (spotrun_worker.agent): session + claim at boot, a session per renewal, one
# call per checkpoint, and with instance reuse next + the next task's session + claim.
ROUTE_CALLS = {"boot_and_claim": 2, "credential_renewal": 1, "checkpoint": 1, "completion_with_reuse": 3}
AGENT_REQUESTS = {"dynamodb:GetItem", "dynamodb:UpdateItem", "sqs:SendMessage"}


@pytest.fixture(scope="module")
def steady() -> dict[str, Any]:
    return lifecycle.drive(40, 2, heartbeats=2)


def test_every_worker_route_call_is_a_counted_invocation_of_the_worker_api(steady: dict[str, Any]) -> None:
    assert steady["verified"]["ok"], steady["verified"]
    phases = steady["phases"]
    for phase, calls in ROUTE_CALLS.items():
        worker_api = phases[phase]["by_actor"]["worker-api"]
        assert worker_api["invocations"] == calls, (phase, worker_api)
        assert any(name.startswith("dynamodb:") for name in worker_api["requests"]), (phase, worker_api)
    assert phases["boot_and_claim"]["by_actor"]["worker-api"]["requests"]["sts:AssumeRole"] == 1
    assert phases["credential_renewal"]["by_actor"]["worker-api"]["requests"]["sts:AssumeRole"] == 1


def test_the_agent_writes_only_its_beat_and_reads_its_desired_state_eventually(steady: dict[str, Any]) -> None:
    for name, phase in steady["phases"].items():
        agent = phase["by_actor"].get("agent", {"requests": {}})
        assert set(agent["requests"]) <= AGENT_REQUESTS, (name, agent["requests"])
        if name != "heartbeat":
            assert "dynamodb:UpdateItem" not in agent["requests"], name
    beat = steady["phases"]["heartbeat"]["by_actor"]["agent"]
    assert beat["requests"] == {"dynamodb:UpdateItem": 1.0, "dynamodb:GetItem": 2.0}
    assert beat["dynamodb_units"]["rru"] == 1.0  # two eventually consistent reads of a small item


def test_an_ended_instance_is_one_message_to_the_interruption_function(steady: dict[str, Any]) -> None:
    assert steady["phases"]["completion"]["queue_messages"]["interruptions"] == 1


def test_the_cost_model_bills_route_calls_as_lambda_invocations_not_api_requests(steady: dict[str, Any]) -> None:
    one = lifecycle.drive(1, 1, heartbeats=1)
    estimate = cost.estimate({"large_job_steady_state": steady, "one_task_job": one,
                              "function_memory_mb": {f.key: f.memory_mb for f in resources.FUNCTIONS}})
    commit = estimate["per_task_fixed_part_usd"]["checkpoint_commit"]
    assert commit["lambda"] > 0 and "api_gateway" not in commit, commit
    hour = estimate["by_case"]["one_per_message"]["new_instance_per_task"]["heartbeat_60s"]["1 hour"]
    assert hour["per_1000_tasks_usd"]["api_gateway"] < 0.001  # the submit's share only
