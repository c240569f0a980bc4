"""A job says what is going on: why it waits (pools tried, when, the next try, whether the deadline
policy or the on-demand fallback steps in), and what cancelling a task the combine needs means for it."""

from __future__ import annotations

from datetime import timedelta

from botocore.exceptions import ClientError

from spotrun.attempts import claim
from spotrun.domain.messages import CompletionReport
from spotrun.domain.model import JobState, TaskState
from spotrun.reaping import sweep
from tests.integration.test_task_flow import JOB, Loop, ref


def no_capacity_anywhere(cp, clock):
    original = cp.compute.client.run_instances

    def refuse(**params):
        clock.advance(0.1)
        raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances")

    cp.compute.client.run_instances = refuse
    return original


def test_a_waiting_job_says_which_pools_refused_when_and_when_it_tries_again(cp, env, aws, context, clock):
    """A job sat QUEUED for 98 s while every pool refused capacity, with no explanation."""
    loop = Loop(cp, env, aws, context)
    original = no_capacity_anywhere(cp, clock)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 2})
    job_id = accepted["job_id"]
    loop.drain()
    status, job = loop.api("GET", f"/jobs/{job_id}")
    assert status == 200 and job["state"] == "QUEUED"
    waiting = job["waiting"]
    assert waiting["queued"] == 2 and "no capacity" in waiting["summary"]
    assert {p["pool"] for p in waiting["pools"]} == set(cp.settings.pools)  # every pool tried
    assert all(p["why"] == "InsufficientInstanceCapacity" and p["until"] and p["since"] for p in waiting["pools"])
    earliest = min(p["until"] for p in waiting["pools"])
    assert waiting["next_try_at"] == earliest  # when the first pool's cool-down ends (the reaper's sweep tries)
    assert "refused launches are not faults" in waiting["on_demand"] and waiting["deadline_policy"] is None
    # once a pool takes it, the job no longer waits
    cp.compute.client.run_instances = original
    clock.advance(cp.settings.cooldown_seconds + 1)
    sweep(cp)
    job = loop.api("GET", f"/jobs/{job_id}")[1]
    assert job["state"] == "RUNNING" and job["waiting"] is None


def test_a_job_at_its_concurrency_limit_says_so(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 3, "max_concurrency": 1})
    loop.drain()
    waiting = loop.api("GET", f"/jobs/{accepted['job_id']}")[1]["waiting"]
    assert waiting["queued"] == 2 and "max_concurrency 1" in waiting["summary"]


def test_a_deadline_job_says_what_its_policy_decides(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    no_capacity_anywhere(cp, clock)
    deadline = (clock() + timedelta(hours=6)).isoformat()
    _, accepted = loop.api("POST", "/jobs", {**JOB, "deadline": deadline, "task_runtime": "1h"})
    loop.drain()
    waiting = loop.api("GET", f"/jobs/{accepted['job_id']}")[1]["waiting"]
    assert waiting["deadline_policy"] and waiting["deadline_policy"].startswith(("wait", "spot", "on-demand"))


def test_cancelling_a_task_the_combine_needs_says_the_combine_will_not_run(cp, env, aws, context, clock):
    """It cancelled the combine at once while the other tasks ran on, and the job just showed RUNNING."""
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 3, "combine": {"command": "python merge.py"}})
    job_id = accepted["job_id"]
    loop.drain()
    for index in range(3):
        claim(cp, ref(loop.task(job_id, index)))
    status, _ = loop.api("POST", f"/jobs/{job_id}/tasks/1/cancel")
    assert status == 202
    job = loop.api("GET", f"/jobs/{job_id}")[1]
    assert "the combine step will not run" in job["reason"] and "task 1" in job["reason"]
    assert "allow_partial" in job["reason"]
    loop.drain()
    cancelled = loop.task(job_id, 1)
    loop.send("reports", CompletionReport(job_id=job_id, index=1, attempt=cancelled.attempt,
                                          instance_id=cancelled.instance_id, sent_at=clock(), outcome="cancelled",
                                          program={"exec_seconds": 5.0}).model_dump_json())
    for index in (0, 2):
        task = loop.task(job_id, index)
        loop.send("reports", CompletionReport(job_id=job_id, index=index, attempt=task.attempt,
                                              instance_id=task.instance_id, sent_at=clock(), outcome="completed",
                                              program={"exit_code": 0}).model_dump_json())
    loop.drain()
    job = loop.api("GET", f"/jobs/{job_id}")[1]
    assert job["state"] == JobState.CANCELLED  # it ended when the rest ended, and says why
    assert "the combine step did not run" in job["reason"] and "task 1" in job["reason"]
    assert loop.task(job_id, 3).state == TaskState.CANCELLED


def test_with_allow_partial_the_combine_runs_on_what_the_other_tasks_produced(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 2, "combine": {"command": "python merge.py",
                                                                           "allow_partial": True}})
    job_id = accepted["job_id"]
    loop.drain()
    loop.api("POST", f"/jobs/{job_id}/tasks/1/cancel")
    job = loop.api("GET", f"/jobs/{job_id}")[1]
    assert "the combine step will run on the outputs of the tasks that succeed" in job["reason"]
    loop.drain()
    task = loop.task(job_id, 0)
    claim(cp, ref(task))
    loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=task.attempt, instance_id=task.instance_id,
                                          sent_at=clock(), outcome="completed", program={"exit_code": 0}).model_dump_json())
    loop.drain()
    assert loop.task(job_id, 2).state == TaskState.LAUNCHING  # the combine was released


def test_the_api_explains_a_wait_without_reading_the_market(cp, env, aws, context, clock, prices):
    """The API function may not call EC2 (DescribeSpotPriceHistory): its explanation reads the store only."""
    loop = Loop(cp, env, aws, context)
    no_capacity_anywhere(cp, clock)
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    before = prices.calls
    assert loop.api("GET", f"/jobs/{accepted['job_id']}")[1]["waiting"] is not None
    assert prices.calls == before
