"""What the control plane's steady state costs in DynamoDB and EC2 requests (issue 4's cost goal):
heartbeats write no index, a reconcile reads only what it needs, admissions launch and bind per pool."""

from __future__ import annotations

from collections import Counter
from typing import Any

from spotrun.attempts import claim
from spotrun.domain.model import TaskState
from spotrun.reaping import sweep
from spotrun.scheduling import reconcile_job
from tests.integration.test_task_flow import JOB, Loop, ref


class Counting:
    """Wraps a boto3 client and counts its operations."""

    def __init__(self, client: Any):
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("get_paginator", "can_paginate"):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls[name] + 1
            return attribute(*args, **kwargs)
        return counted


def raw_task(aws: Any, env: dict[str, str], job_id: str, index: int = 0) -> dict[str, Any]:
    table = env["SPOTRUN_TABLE"]
    return aws.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"TASK#{job_id}#{index:06d}"}, "sk": {"S": "TASK"}})["Item"]


def test_a_heartbeat_changes_no_index_key_and_the_reaper_still_finds_a_silent_worker(cp, env, aws, context, clock):
    # Given a running task
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    job_id = accepted["job_id"]
    claim(cp, ref(loop.task(job_id)))
    before = raw_task(aws, env, job_id)

    # When it heartbeats, then its progress is stored and no index key moved (no index write)
    clock.advance(30)
    task = loop.task(job_id)
    assert cp.store.record_beat(job_id, 0, task.attempt, clock(), 0.5)
    after = raw_task(aws, env, job_id)
    assert after["beat"]["M"]["progress"] == {"N": "0.5"} and loop.task(job_id).progress == 0.5
    for key in ("state_pk", "state_sk", "job_pk", "job_sk", "live_pk", "live_sk"):
        assert after[key] == before[key], key

    # And a worker that goes silent (EC2 says its instance is gone) is still found from the live index
    cp.compute.client.terminate_instances(InstanceIds=[task.instance_id])
    clock.advance(cp.settings.heartbeat_stale_seconds - 10)
    assert sweep(cp).lost == []  # 20 s after its heartbeat it is not silent yet
    clock.advance(20)
    assert len(sweep(cp).lost) == 1


def test_a_reconcile_of_a_running_job_reads_a_few_items_not_every_state_of_every_shard(cp, env, aws, context):
    # Given a job with queued and running tasks
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 40, "max_concurrency": 4})
    loop.drain()
    job_id = accepted["job_id"]
    for task in cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, 10):
        claim(cp, ref(task))

    # When the scheduler reconciles it (a completion's wake-up, nothing to admit)
    counting = Counting(cp.store.client)
    cp.store.client = counting
    reconcile_job(cp, job_id)

    # Then it looks for queued work, not for cancelled or suspended tasks it has no sign of
    assert counting.calls["query"] <= 2, counting.calls


def test_a_single_cancelled_task_is_found_by_its_index(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 6, "max_concurrency": 2})
    loop.drain()
    job_id = accepted["job_id"]
    launching = loop.task(job_id, 0)
    assert launching.state == TaskState.LAUNCHING
    # When the user cancels a queued and a launching task one by one
    for index in (5, 0):
        status, _ = loop.api("POST", f"/jobs/{job_id}/tasks/{index}/cancel")
        assert status == 202
    loop.drain()
    # Then both are cancelled (the launching one's instance ended), the others are untouched
    assert loop.task(job_id, 5).state == TaskState.CANCELLED and loop.task(job_id, 0).state == TaskState.CANCELLED
    assert cp.compute.statuses([launching.instance_id])[launching.instance_id].state in ("shutting-down", "terminated")
    assert [loop.task(job_id, i).state for i in range(1, 5)].count(TaskState.CANCELLED) == 0


def test_admitting_many_tasks_makes_one_launch_call_per_pool_and_no_call_per_instance(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    counting = Counting(cp.compute.client)
    cp.compute.client = counting
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 30, "max_concurrency": 30})
    loop.drain()
    job_id = accepted["job_id"]
    launching = cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, 100)
    assert len(launching) == 30
    pools = {t.pool for t in launching}
    assert counting.calls["run_instances"] == len(pools) < 30
    assert counting.calls["create_tags"] == 0
    # Every task knows its instance, and every instance's worker record names its task
    workers = cp.store.workers([t.instance_id for t in launching])
    assert {(w.job_id, w.index, w.attempt) for w in workers.values()} == {(job_id, t.index, t.attempt) for t in launching}


def test_an_agent_that_keeps_its_instance_is_not_raced_by_a_new_launch_for_the_next_task(cp, env, aws, context, clock):
    from tests.integration.test_task_flow import completion

    # Given a job at its cap with queued tasks
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 4, "max_concurrency": 2})
    loop.drain()
    job_id = accepted["job_id"]
    running = cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, 10)
    for task in running:
        claim(cp, ref(task))
    counting = Counting(cp.compute.client)
    cp.compute.client = counting

    # When one finishes and its agent keeps the instance for the next task
    first, second = (loop.task(job_id, t.index) for t in running)
    clock.advance(60)
    loop.send("reports", completion(first, clock()).replace('"keep_instance":false', '"keep_instance":true'))
    loop.drain()
    # Then the scheduler launches nothing (the agent takes the queued task) and the instance lives on
    assert counting.calls["run_instances"] == 0 and counting.calls["terminate_instances"] == 0
    assert len(cp.store.tasks_in_state(job_id, TaskState.QUEUED, 10)) == 2

    # When the other finishes and gives its instance up, then the scheduler fills the slot
    loop.send("reports", completion(second, clock()))
    loop.drain()
    assert counting.calls["run_instances"] == 1 and counting.calls["terminate_instances"] == 1


def test_a_cancel_mark_whose_message_was_lost_is_carried_out_when_the_job_resumes(cp, env, aws, context):
    from spotrun.domain.model import Desired

    # Given a suspended job
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 2, "max_concurrency": 1})
    loop.drain()
    job_id = accepted["job_id"]
    assert loop.api("POST", f"/jobs/{job_id}/suspend")[0] == 202
    loop.drain()
    assert {loop.task(job_id, i).state for i in range(2)} == {TaskState.SUSPENDED}
    # And a task marked cancelled whose control message never arrived
    assert cp.store.set_task_desired(job_id, 1, Desired.CANCEL, [TaskState.SUSPENDED], cp.clock())

    # When the job resumes, then the marked task is cancelled and the other one runs again
    assert loop.api("POST", f"/jobs/{job_id}/resume")[0] == 202
    loop.drain()
    assert loop.task(job_id, 1).state == TaskState.CANCELLED
    assert loop.task(job_id, 0).state == TaskState.LAUNCHING
