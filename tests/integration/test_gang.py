"""Gang tasks (`nodes: N`) in the control plane, through the real handlers against moto: admission all or
nothing in one pool, caps counting instances, one interruption per gang, one commit per gang checkpoint
(by rank 0, naming every rank), and the old gang's instances ended at the handover."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from spotrun.assignments import NotServing, commit
from spotrun.attempts import ClaimRefused, claim
from spotrun.domain.launches import LaunchResult
from spotrun.domain.messages import AttemptRef, CompletionReport, ProgramResult
from spotrun.domain.model import TaskState
from tests.integration.test_task_flow import Loop

GANG = {"name": "ring", "command": ["python", "ring.py"], "nodes": 2, "checkpoint": {"method": "signal"}}


def rank_ref(task: Any, rank: int) -> AttemptRef:
    return AttemptRef(job_id=task.job_id, index=task.index, attempt=task.attempt,
                      instance_id=task.gang_instances[rank], rank=rank)


def test_a_gang_is_admitted_whole_in_one_pool_and_counts_its_instances(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**GANG, "tasks": 2, "max_concurrency": 3})
    job_id = accepted["job_id"]
    loop.drain()
    first, second = loop.task(job_id, 0), loop.task(job_id, 1)
    # room for 3 instances: one gang of 2 runs, the other waits (2 + 2 > 3)
    assert first.state == TaskState.LAUNCHING and second.state == TaskState.QUEUED
    assert len(first.gang_instances) == 2 and first.instance_id == first.gang_instances[0]
    workers = [cp.store.worker(i) for i in first.gang_instances]
    assert [w.rank for w in workers] == [0, 1] and {w.pool for w in workers} == {first.pool}
    instances = [loop.instance(i) for i in first.gang_instances]
    assert len({(i["type"], i["zone"]) for i in instances}) == 1
    assert cp.store.get_job(job_id).active == 2 and cp.store.account_active() == 2
    assert cp.store.pool_stats([first.pool])[first.pool].running == 2


def test_a_launch_giving_fewer_instances_than_the_gang_is_undone_and_the_next_pool_tried(cp, env, aws, context):
    real = cp.compute.launch
    calls: list[str] = []

    def short_first(request: Any) -> LaunchResult:
        result = real(request)
        calls.append(f"{request.instance_type}@{request.zone}")
        return LaunchResult(instance_ids=result.instance_ids[:1]) if len(calls) == 1 else result

    cp.compute.launch = short_first
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    assert len(calls) == 2 and task.pool == calls[1] != calls[0]
    assert task.state == TaskState.LAUNCHING and len(task.gang_instances) == 2 and task.attempt == 1
    refused = [e for e in cp.store.timeline(job_id, 100) if e.kind == "LaunchRefused"]
    assert len(refused) == 1 and "1 of 2" in refused[0].detail.get("error", "") + refused[0].detail.get("reason", "")
    assert cp.store.get_job(job_id).active == 2  # the undone admission gave its 2 back


def test_a_warning_to_any_rank_replaces_the_gang_once_and_the_handover_ends_the_old_gang(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    with pytest.raises(ClaimRefused):
        claim(cp, rank_ref(task, 1))  # rank 0 claims for the gang
    claim(cp, rank_ref(task, 0))
    task = loop.task(job_id)
    assert task.state == TaskState.RUNNING
    [started] = [e for e in cp.store.timeline(job_id, 100) if e.kind == "TaskStarted"]
    assert started.detail["ranks"] == list(task.gang_instances)  # the timeline names every rank's instance

    # only rank 0 commits, and only a checkpoint naming every rank
    with pytest.raises(NotServing):
        commit(cp, task.gang_instances[1], task.attempt, 1, 100, "signal", clock(), ranks=2)
    assert not commit(cp, task.gang_instances[0], task.attempt, 1, 100, "signal", clock(), ranks=1)
    assert commit(cp, task.gang_instances[0], task.attempt, 1, 200, "signal", clock(), ranks=2)
    assert loop.task(job_id).checkpoint.ranks == 2

    clock.advance(60)
    loop.send_warning(task.gang_instances[1], clock())  # rank 1 is warned
    loop.drain()
    loop.send_warning(task.gang_instances[0], clock())  # and then rank 0 too: the same gang
    loop.drain()
    replaced = loop.task(job_id)
    assert replaced.state == TaskState.LAUNCHING and replaced.attempt == 2 and replaced.draining_attempt == 1
    assert replaced.interruptions == 1 and len(replaced.gang_instances) == 2 and replaced.pool != task.pool
    assert not set(replaced.gang_instances) & set(task.gang_instances)
    [interrupted] = [e for e in cp.store.timeline(job_id, 100) if e.kind == "TaskInterrupted"]
    # the gang's interruption names the member the warning came to
    assert interrupted.detail["reason"].endswith(f", at rank 1 of the gang ({task.gang_instances[1]})")
    assert replaced.reason == interrupted.detail["reason"]
    assert cp.store.pool_stats([task.pool])[task.pool].interruptions == 1
    assert cp.store.get_job(job_id).active == 2  # the new gang's; the old one's freed with the move

    # rank 1 of the old gang reports first: noted, no handover yet; rank 0's report (after its commit) is it
    clock.advance(5)
    loop.send("reports", report(task, 1, "interrupted", clock()))
    loop.drain()
    old = [a for a in cp.store.attempts(job_id, 0) if a.number == 1][0]
    assert old.drained_at is None and all(loop.instance(i)["state"] == "running" for i in task.gang_instances)
    loop.send("reports", report(task, 0, "interrupted", clock()))
    loop.drain()
    old = [a for a in cp.store.attempts(job_id, 0) if a.number == 1][0]
    assert old.drained_at is not None
    assert all(loop.instance(i)["state"] in ("shutting-down", "terminated") for i in task.gang_instances)
    events = cp.store.timeline(job_id, 100)
    assert [e.detail["rank"] for e in events if e.kind == "RankEnded"] == [1]
    # the job's statistics count both instances' time
    stats = cp.store.get_job(job_id).stats
    assert stats[f"{task.pool}|instance_seconds"] == pytest.approx(2 * (60 + 5), abs=0.01)


def test_a_rank_failing_on_its_own_ends_the_gangs_attempt(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    claim(cp, rank_ref(task, 0))
    clock.advance(timedelta(seconds=20).total_seconds())
    loop.send("reports", report(loop.task(job_id), 1, "environment_error", clock(), reason="disk full"))
    loop.drain()
    after = loop.task(job_id)
    assert after.attempt == 2 and after.environment_failures == 1
    faults = [e for e in cp.store.timeline(job_id, 100) if e.kind == "EnvironmentFault"]
    assert len(faults) == 1 and "rank 1 of the gang" in faults[0].detail["reason"] and "disk full" in faults[0].detail["reason"]
    assert all(loop.instance(i)["state"] in ("shutting-down", "terminated") for i in task.gang_instances)


def report(task: Any, rank: int, outcome: str, at: Any, reason: str = "") -> str:
    return CompletionReport(
        job_id=task.job_id, index=task.index, attempt=task.attempt, instance_id=task.gang_instances[rank], rank=rank,
        sent_at=at, outcome=outcome, reason=reason, program=ProgramResult(exec_seconds=30.0),
    ).model_dump_json()


def test_an_old_gang_rank_reclaimed_before_rank_0_reported_is_no_handover(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    claim(cp, rank_ref(task, 0))
    loop.send_warning(task.gang_instances[1], clock())
    loop.drain()
    clock.advance(10)
    loop.send_state_change(task.gang_instances[1], "terminated", clock())
    loop.drain()
    old = [a for a in cp.store.attempts(job_id, 0) if a.number == 1][0]
    assert old.drained_at is None  # rank 0 is still taking the final checkpoint: the new gang waits for it
    loop.send("reports", report(task, 0, "interrupted", clock()))
    loop.drain()
    assert [a for a in cp.store.attempts(job_id, 0) if a.number == 1][0].drained_at is not None


def test_a_gang_larger_than_a_pool_may_hold_is_refused_at_submission(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)  # the fixture's pools hold at most 10 instances each
    status, answer = loop.api("POST", "/jobs", {**GANG, "nodes": 11, "max_concurrency": 20})
    assert status == 400 and "nodes" in json.dumps(answer) and "at most 10 run in one pool" in json.dumps(answer)
    status, answer = loop.api("POST", "/jobs", {**GANG, "nodes": 4, "max_concurrency": 3})
    assert status == 400 and "max_concurrency of at least 4" in json.dumps(answer)


def test_a_ranks_agent_reports_and_heartbeats_as_its_rank(cp, env, aws, context, clock, tmp_path):
    """Found by the gang benchmark: rank 1's report went out as rank 0's, so a rank 1 that finished first
    ended the gang (and killed rank 0 before it uploaded its outputs and log)."""
    from spotrun_worker.agent import Agent, AgentConfig
    from spotrun_worker.routes import InProcessRoutes

    class Queue:
        def __init__(self) -> None:
            self.bodies: list[dict[str, Any]] = []

        def send_message(self, QueueUrl: str, MessageBody: str) -> None:  # noqa: N803 - boto3's names
            self.bodies.append(json.loads(MessageBody))

    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", GANG)
    loop.drain()
    task = loop.task(accepted["job_id"])
    queue = Queue()
    config = AgentConfig(table=cp.settings.table, bucket=cp.settings.bucket, report_queue_url="r", work_root=tmp_path)
    agent = Agent(config, InProcessRoutes(cp, task.gang_instances[1], sqs=queue), None, clock=clock)
    assignment = agent.routes.session()
    assert assignment.ref.rank == 1
    agent.ref = assignment.ref
    agent.workspace = type("W", (), {"progress_path": tmp_path / "progress"})()
    agent.heartbeat()  # every rank beats its gang task's item: any rank's beat is the attempt's sign of life
    stored = cp.store.client.get_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{task.job_id}#000000"},
                                                                        "sk": {"S": "TASK"}})["Item"]
    assert stored["beat"]["M"]["attempt"] == {"N": str(assignment.ref.attempt)}
    agent.report("completed", program=ProgramResult(exit_code=0))
    assert [body["rank"] for body in queue.bodies] == [1]
    loop.send("reports", json.dumps(queue.bodies[0]))
    loop.drain()
    assert loop.task(accepted["job_id"]).state == TaskState.LAUNCHING  # rank 1's end is not the gang's


def test_a_rank_lost_without_a_warning_returns_the_gang_to_its_last_checkpoint(cp, env, aws, context, clock):
    """No warning, no report: rank 1's instance just goes. The gang's attempt is lost as a whole (its
    other ranks cannot go on without it): every old instance is ended, and the next gang starts from the
    last committed gang checkpoint."""
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    claim(cp, rank_ref(task, 0))
    assert commit(cp, task.gang_instances[0], task.attempt, 1, 200, "signal", clock(), ranks=2)
    clock.advance(30)
    cp.compute.client.terminate_instances(InstanceIds=[task.gang_instances[1]])  # gone, without a warning
    loop.send_state_change(task.gang_instances[1], "shutting-down", clock())
    loop.drain()
    again = loop.task(job_id)
    assert again.attempt == 2 and again.state in (TaskState.QUEUED, TaskState.LAUNCHING)
    assert again.checkpoint is not None and again.checkpoint.seq == 1 and again.checkpoint.ranks == 2
    assert all(loop.instance(i)["state"] in ("shutting-down", "terminated") for i in task.gang_instances)
    if again.state == TaskState.LAUNCHING:  # relaunched at once: a whole new gang
        assert len(again.gang_instances) == 2 and not set(again.gang_instances) & set(task.gang_instances)
    first = [a for a in cp.store.attempts(job_id, 0) if a.number == 1][0]
    assert first.outcome in ("lost", "interrupted") and first.nodes == 2


def test_a_gang_asking_for_a_cluster_is_launched_into_its_zones_placement_group(cp, env, aws, context):
    """moto ignores RunInstances' placement (and has no placement groups): the EC2 client records what
    the launch asked for, on its way to moto."""
    sent: list[dict[str, Any]] = []
    client = cp.compute.client
    run_instances = client.run_instances

    def recorded(**params: Any) -> Any:
        sent.append(params)
        return run_instances(**params)

    client.run_instances = recorded
    cp.compute.placement_groups = {zone: f"cluster-{zone}" for zone in cp.compute.subnets}
    loop = Loop(cp, env, aws, context)
    _, together = loop.api("POST", "/jobs", {**GANG, "placement": "cluster"})
    _, apart = loop.api("POST", "/jobs", GANG)
    loop.drain()
    placed = loop.task(together["job_id"])
    assert placed.state == TaskState.LAUNCHING and len(placed.gang_instances) == 2
    by_job = {p["TagSpecifications"][0]["Tags"][[t["Key"] for t in p["TagSpecifications"][0]["Tags"]].index(
        "spotrun:job")]["Value"]: p for p in sent}
    zone = placed.pool.split("@")[1]
    assert by_job[together["job_id"]]["Placement"] == {"GroupName": f"cluster-{zone}"}
    assert by_job[together["job_id"]]["MinCount"] == 2
    assert "Placement" not in by_job[apart["job_id"]]  # one zone (its subnet) is placement enough

    # a zone without a group refuses the launch, and the broker tries the next pool
    cp.compute.placement_groups = {}
    _, stranded = loop.api("POST", "/jobs", {**GANG, "placement": "cluster"})
    loop.drain()
    assert loop.task(stranded["job_id"]).state == TaskState.QUEUED
    refused = [e for e in cp.store.timeline(stranded["job_id"], 100) if e.kind == "LaunchRefused"]
    assert len(refused) == len(cp.compute.subnets) * 2  # every pool (2 types per zone) tried, none launched
    assert all(e.detail["error"] == "Unsupported" for e in refused)
