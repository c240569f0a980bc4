"""One task through the whole event loop against moto, with every event shaped as AWS delivers it:
API Gateway proxy -> SNS -> SQS (filter policy) -> scheduler -> EC2 instance -> the agent's beats (DynamoDB)
-> spot interruption warning (EventBridge -> SQS) -> replacement -> completion (SQS) -> SUCCEEDED.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from spotrun.attempts import ClaimRefused, claim, commit_checkpoint
from spotrun.domain.messages import AttemptRef, CompletionReport, ProgramResult
from spotrun.domain.model import Checkpoint, JobState, TaskState
from spotrun.handlers import api, finisher, interruption, scheduler
from spotrun_local.pump import SqsPump
from tests.support import api_event, eventbridge_event


class Loop:
    """The event loop of one test: the real handlers fed from moto's queues by SQS pumps."""

    def __init__(self, cp: Any, env: dict[str, str], aws: Any, context: Any, duplicate: bool = False):
        self.cp, self.context = cp, context
        self.sqs = aws.client("sqs", region_name="us-east-1")
        urls = json.loads(env["SPOTRUN_QUEUE_URLS"])
        self.urls = urls
        self.duplicate = duplicate
        self.pumps = {
            "scheduler": SqsPump(self.sqs, urls["scheduler"], self._twice(partial(scheduler.handler, control=cp)), "scheduler"),
            "reports": SqsPump(self.sqs, urls["reports"], self._twice(partial(finisher.handler, control=cp)), "finisher"),
            "interruptions": SqsPump(self.sqs, urls["interruptions"], self._twice(partial(interruption.handler, control=cp)),
                                     "interruption"),
        }

    def _twice(self, handler: Any) -> Any:
        """With duplicate=True every batch is delivered twice (at-least-once delivery)."""
        def deliver(event: dict[str, Any], context: Any) -> dict[str, Any]:
            answer = handler(event, context)
            if self.duplicate:
                answer = handler(event, context)
            return answer
        return deliver

    def api(self, method: str, path: str, body: Any = None, **query: str) -> tuple[int, Any]:
        answer = api.handler(api_event(method, path, body, query or None), self.context, control=self.cp)
        return answer["statusCode"], json.loads(answer["body"])

    def send(self, queue: str, body: Any) -> None:
        self.sqs.send_message(QueueUrl=self.urls[queue], MessageBody=body if isinstance(body, str) else json.dumps(body))

    def drain(self) -> None:
        for _ in range(20):
            if not sum(p.drain() for p in self.pumps.values()):
                return

    def task(self, job_id: str, index: int = 0) -> Any:
        return self.cp.store.get_task(job_id, index)

    def launch(self, spec: dict[str, Any]) -> Any:
        """Submits a job of `spec` and runs the scheduler: its task 0 as launched (its agent has not claimed it)."""
        status, accepted = self.api("POST", "/jobs", spec)
        assert status == 202, accepted
        self.drain()
        return self.task(accepted["job_id"])

    def start(self, spec: dict[str, Any]) -> Any:
        """`launch`, then the task's agent claims it (RUNNING): the task as launched."""
        task = self.launch(spec)
        claim(self.cp, ref(task))
        return task

    def send_warning(self, instance_id: str, at: Any = None) -> None:
        """EC2's spot interruption warning for an instance, as EventBridge delivers it to the queue."""
        self.send("interruptions", eventbridge_event(
            "EC2 Spot Instance Interruption Warning", {"instance-id": instance_id, "instance-action": "terminate"}, at=at))

    def send_state_change(self, instance_id: str, state: str, at: Any = None) -> None:
        """EC2's notification that an instance changed state, as EventBridge delivers it to the queue."""
        self.send("interruptions", eventbridge_event(
            "EC2 Instance State-change Notification", {"instance-id": instance_id, "state": state}, at=at))

    def instance(self, instance_id: str) -> dict[str, Any]:
        ec2 = self.cp.compute.client
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return {"state": found["State"]["Name"], "type": found["InstanceType"],
                "zone": found["Placement"]["AvailabilityZone"], "tags": {t["Key"]: t["Value"] for t in found.get("Tags", [])},
                "spot": found.get("InstanceLifecycle") == "spot"}


JOB = {"name": "pi", "command": ["python", "pi.py"], "checkpoint": {"method": "signal"},
       "resources": {"vcpus": 2, "memory_gib": 4}}


def beat(loop: Loop, task: Any, at: Any, progress: float) -> bool:
    """What the agent does every heartbeat interval: its own write of its task's beat (no message)."""
    return bool(loop.cp.store.record_beat(task.job_id, task.index, task.attempt, at, progress))


def completion(task: Any, at: Any, outcome: str = "completed", exit_code: int | None = 0, attempt: int | None = None,
               instance_id: str | None = None) -> str:
    return CompletionReport(
        job_id=task.job_id, index=task.index, attempt=attempt or task.attempt, instance_id=instance_id or task.instance_id,
        sent_at=at, outcome=outcome,
        program=ProgramResult(exit_code=exit_code, exec_seconds=42.0, log_tail="done") if exit_code is not None else None,
    ).model_dump_json()


def ref(task: Any) -> AttemptRef:
    return AttemptRef(job_id=task.job_id, index=task.index, attempt=task.attempt, instance_id=task.instance_id)


@pytest.mark.parametrize("duplicate", [False, True], ids=["once", "every-message-twice"])
def test_one_task_survives_a_spot_interruption_and_succeeds(cp, env, aws, context, clock, duplicate):
    loop = Loop(cp, env, aws, context, duplicate=duplicate)

    # Given a submitted job
    status, accepted = loop.api("POST", "/jobs", JOB)
    assert status == 202, accepted
    job_id = accepted["job_id"]

    # When the scheduler runs, then a spot instance exists, tagged with the task and attempt
    loop.drain()
    task = loop.task(job_id)
    assert task.state == TaskState.LAUNCHING and task.attempt == 1 and task.instance_id
    first = loop.instance(task.instance_id)
    assert first["tags"]["spotrun:task"] == "0" and first["tags"]["spotrun:attempt"] == "1"
    assert first["tags"]["spotrun:job"] == job_id and first["spot"]
    assert task.pool == f"{first['type']}@{first['zone']}"

    # The agent claims its task and heartbeats
    claim(cp, ref(task))
    clock.advance(30)
    assert beat(loop, loop.task(job_id), clock(), 0.25)
    task = loop.task(job_id)
    assert task.state == TaskState.RUNNING and task.progress == 0.25 and task.last_heartbeat_at == clock()
    assert cp.store.get_job(job_id).state == JobState.RUNNING

    # and commits a checkpoint
    assert commit_checkpoint(cp, ref(task), Checkpoint(1, f"checkpoints/{job_id}/0/1", 1, 1000, clock(), "signal"))

    # When a spot interruption warning arrives for its instance
    clock.advance(60)
    loop.send_warning(task.instance_id, clock())
    loop.drain()

    # Then a replacement attempt is launched at once, in another pool, keeping the checkpoint pointer
    replaced = loop.task(job_id)
    assert replaced.state == TaskState.LAUNCHING and replaced.attempt == 2
    assert replaced.instance_id and replaced.instance_id != task.instance_id
    assert replaced.pool != task.pool
    assert replaced.checkpoint is not None and replaced.checkpoint.seq == 1
    assert replaced.draining_attempt == 1 and replaced.program_failures == 0 and replaced.environment_failures == 0
    second = loop.instance(replaced.instance_id)
    assert second["tags"]["spotrun:attempt"] == "2"

    # The interrupted attempt may still commit its final checkpoint, then reports
    clock.advance(20)
    assert commit_checkpoint(cp, ref(task), Checkpoint(2, f"checkpoints/{job_id}/0/2", 1, 1000, clock(), "signal"))
    loop.send("reports", completion(task, clock(), outcome="interrupted", exit_code=None))
    loop.drain()
    assert loop.task(job_id).state == TaskState.LAUNCHING
    assert loop.task(job_id).checkpoint.seq == 2

    # The replacement claims (the old attempt cannot), runs and completes
    with pytest.raises(ClaimRefused):
        claim(cp, ref(task))
    claim(cp, ref(replaced))
    clock.advance(60)
    assert beat(loop, loop.task(job_id), clock(), 0.9)
    loop.send("reports", completion(loop.task(job_id), clock() + timedelta(seconds=1)))
    loop.drain()

    done = loop.task(job_id)
    assert done.state == TaskState.SUCCEEDED and done.exit_code == 0 and done.attempt == 2
    assert cp.store.get_job(job_id).state == JobState.SUCCEEDED
    assert loop.instance(replaced.instance_id)["state"] in ("shutting-down", "terminated")
    attempts = cp.store.attempts(job_id, 0)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "interrupted"), (2, "completed")]
    kinds = [e.kind for e in cp.store.timeline(job_id, 100)]
    for expected in ("JobSubmitted", "TaskLaunching", "TaskStarted", "CheckpointCommitted", "TaskInterrupted",
                     "TaskSucceeded"):
        assert expected in kinds
    # Delivered twice or once, each transition is on the timeline exactly once; the replacement is one
    # interruption (of attempt 1) and one launch (of attempt 2)
    assert kinds.count("TaskInterrupted") == 1 and kinds.count("TaskSucceeded") == 1
    assert [(e.kind, e.attempt) for e in cp.store.timeline(job_id, 100) if e.kind in ("TaskLaunching", "TaskInterrupted")] \
        == [("TaskLaunching", 1), ("TaskInterrupted", 1), ("TaskLaunching", 2)]
    job = cp.store.get_job(job_id)
    assert job.counts.get("SUCCEEDED") == 1 and job.active == 0 and cp.store.account_active() == 0
    pools = cp.store.pool_stats([task.pool, replaced.pool])
    assert pools[task.pool].interruptions == 1 and pools[task.pool].running == 0
    assert pools[replaced.pool].executions == 1 and pools[replaced.pool].running == 0

    # The job's statistics agree with the timeline, once, however often messages came
    status, stats = loop.api("GET", f"/jobs/{job_id}/stats")
    assert status == 200 and stats["final"] is True
    assert stats["total"]["executions"] == 2 and stats["total"]["interruptions"] == kinds.count("TaskInterrupted") == 1
    assert stats["pools"][task.pool]["interruptions"] == 1 and stats["pools"][replaced.pool]["executions"] == 1
    assert stats["pools"][replaced.pool]["exec_seconds"] == 42.0
    # attempt 1 lived from launch (t0) to its final report (t0 + 110 s), attempt 2 from t0 + 90 s to t0 + 170 s
    assert stats["pools"][task.pool]["instance_seconds"] == 110.0
    assert stats["pools"][replaced.pool]["instance_seconds"] == 80.0
    assert 0 < stats["total"]["spot_cost_usd"] < stats["total"]["on_demand_cost_usd"]


def test_a_program_failure_ends_failed_without_a_retry(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.start(JOB)
    loop.send("reports", completion(loop.task(task.job_id), clock(), exit_code=3))
    loop.drain()
    failed = loop.task(task.job_id)
    assert failed.state == TaskState.FAILED and failed.exit_code == 3 and failed.attempt == 1
    assert "program exited with code 3" in failed.reason and failed.log_tail == "done"
    assert cp.store.get_job(task.job_id).state == JobState.FAILED
    assert loop.instance(task.instance_id)["state"] in ("shutting-down", "terminated")


def test_program_failures_are_retried_only_on_the_exit_codes_the_spec_names(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = loop.start({**JOB, "retries": {"program": 2, "exit_codes": [75]}}).job_id
    loop.send("reports", completion(loop.task(job_id), clock(), exit_code=75))
    loop.drain()
    retried = loop.task(job_id)
    assert retried.attempt == 2 and retried.program_failures == 1 and retried.state == TaskState.LAUNCHING
    claim(cp, ref(retried))
    loop.send("reports", completion(loop.task(job_id), clock(), exit_code=1))
    loop.drain()
    assert loop.task(job_id).state == TaskState.FAILED


def test_an_environment_failure_is_retried_on_another_pool_without_using_the_program_budget(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    first = loop.start(JOB)
    job_id = first.job_id
    loop.send("reports", completion(loop.task(job_id), clock(), outcome="environment_error", exit_code=None))
    loop.drain()
    retried = loop.task(job_id)
    assert retried.state == TaskState.LAUNCHING and retried.attempt == 2
    assert retried.pool != first.pool and first.pool in retried.avoid_pools
    assert retried.environment_failures == 1 and retried.program_failures == 0
    assert cp.store.pool_stats([first.pool])[first.pool].failures == 1


def test_an_instance_that_terminates_without_warning_requeues_its_task(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.start(JOB)
    job_id = task.job_id
    loop.send_state_change(task.instance_id, "terminated")
    loop.drain()
    again = loop.task(job_id)
    assert again.attempt == 2 and again.state == TaskState.LAUNCHING and again.environment_failures == 1
    # The same event late, or a duplicate, changes nothing more
    loop.send_state_change(task.instance_id, "terminated")
    loop.drain()
    assert loop.task(job_id).attempt == 2


def test_a_rebalance_recommendation_asks_for_a_checkpoint_and_keeps_the_instance(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.start(JOB)
    job_id = task.job_id
    loop.send("interruptions", eventbridge_event("EC2 Instance Rebalance Recommendation", {"instance-id": task.instance_id}))
    loop.drain()
    after = loop.task(job_id)
    assert after.attempt == 1 and after.state == TaskState.RUNNING
    assert loop.instance(task.instance_id)["state"] == "running"
    assert after.checkpoint_requested_at == clock()


def test_beats_and_reports_of_old_attempts_change_nothing(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.start(JOB)
    job_id = task.job_id
    now = clock() + timedelta(seconds=60)
    assert beat(loop, loop.task(job_id), now, 0.6)
    # An agent of an earlier attempt (a straggler) cannot overwrite the newer attempt's beat
    assert not loop.cp.store.record_beat(job_id, 0, task.attempt - 1, now + timedelta(seconds=30), 0.3)
    assert loop.task(job_id).progress == 0.6 and loop.task(job_id).last_heartbeat_at == now
    # A report naming an attempt that never owned the task is ignored
    loop.send("reports", completion(loop.task(job_id), clock(), exit_code=0, attempt=7))
    loop.drain()
    assert loop.task(job_id).state == TaskState.RUNNING


def test_malformed_and_foreign_messages_are_dropped_not_retried(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    for queue in ("reports", "interruptions"):
        loop.send(queue, "not json at all")
        loop.send(queue, json.dumps({"hello": "world"}))
    loop.drain()
    dlqs = json.loads(env["SPOTRUN_DLQ_URLS"])
    for queue in ("reports", "interruptions"):
        attributes = loop.sqs.get_queue_attributes(QueueUrl=loop.urls[queue], AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
        dlq = loop.sqs.get_queue_attributes(QueueUrl=dlqs[queue], AttributeNames=["ApproximateNumberOfMessages"])
        assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"
