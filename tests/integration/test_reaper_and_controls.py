"""The reaper's sweep and the user's controls (cancel, suspend, resume, caps) against moto."""

from __future__ import annotations

from spotrun.attempts import claim
from spotrun.domain.messages import AttemptRef, CompletionReport
from spotrun.domain.model import Desired, JobState, TaskState
from spotrun.handlers import reaper
from spotrun.reaping import sweep
from spotrun.scheduling import reconcile_job
from tests.integration.test_task_flow import JOB, Loop, ref


def instance_state(cp, instance_id):
    return cp.compute.statuses([instance_id])[instance_id].state


def submitted_and_running(loop, cp, spec=JOB):
    _, accepted = loop.api("POST", "/jobs", spec)
    loop.drain()
    job_id = accepted["job_id"]
    for task in cp.store.list_tasks(job_id, None, 100, None)[0]:
        if task.state == TaskState.LAUNCHING:
            claim(cp, ref(task))
    return job_id


def test_a_worker_whose_instance_is_gone_and_heartbeats_stopped_is_requeued(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp)
    task = loop.task(job_id)
    # The instance vanished without any event reaching spotrun
    cp.compute.client.terminate_instances(InstanceIds=[task.instance_id])
    clock.advance(cp.settings.heartbeat_stale_seconds + 1)
    report = reaper.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, context, control=cp)
    assert report["lost"] == 1
    again = loop.task(job_id)
    assert again.attempt == 2 and again.state == TaskState.LAUNCHING and again.environment_failures == 1
    assert again.instance_id != task.instance_id


def test_a_silent_worker_ec2_calls_running_gets_more_time_before_it_is_declared_lost(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp)
    task = loop.task(job_id)
    clock.advance(cp.settings.heartbeat_stale_seconds + 1)
    assert sweep(cp).lost == [] and loop.task(job_id).attempt == 1
    assert instance_state(cp, task.instance_id) == "running"
    clock.advance(3 * cp.settings.heartbeat_stale_seconds)
    assert len(sweep(cp).lost) == 1
    assert loop.task(job_id).attempt == 2
    assert instance_state(cp, task.instance_id) in ("shutting-down", "terminated")


def test_a_launch_that_never_started_its_task_is_retried(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    first = loop.launch(JOB)
    job_id = first.job_id
    assert first.state == TaskState.LAUNCHING
    clock.advance(cp.settings.launch_stale_seconds + 1)
    report = sweep(cp)
    assert len(report.stuck_launches) == 1
    assert loop.task(job_id).attempt == 2


def test_instances_nobody_owns_are_terminated(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp)
    owned = loop.task(job_id).instance_id
    launched = cp.compute.client.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c6i.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "spotrun:managed", "Value": "true"}]}],
    )["Instances"][0]
    stray = launched["InstanceId"]
    clock.now = launched["LaunchTime"]  # moto stamps launches with the real time
    assert stray not in sweep(cp).orphans  # too young: it may be a launch being recorded right now
    clock.advance(cp.settings.launch_stale_seconds + 1)
    cp.store.record_beat(job_id, 0, 1, clock())
    report = sweep(cp)
    assert stray in report.orphans and owned not in report.orphans
    assert instance_state(cp, stray) in ("shutting-down", "terminated")


def test_max_concurrency_and_the_account_cap_hold(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    _, first = loop.api("POST", "/jobs", {**JOB, "tasks": 12, "max_concurrency": 3})
    _, second = loop.api("POST", "/jobs", {**JOB, "tasks": 12, "max_concurrency": 5})
    loop.drain()
    for accepted, cap in ((first, 3), (second, 5)):
        job = cp.store.get_job(accepted["job_id"])
        assert job.active == cap and job.counts["LAUNCHING"] == cap and job.counts["QUEUED"] == 12 - cap
    assert cp.store.account_active() == 8
    # scheduling again admits nothing more
    reconcile_job(cp, first["job_id"])
    assert cp.store.get_job(first["job_id"]).active == 3


def test_one_ec2_call_per_pool_not_per_task(cp, env, aws, context):
    loop = Loop(cp, env, aws, context)
    calls = []
    original = cp.compute.client.run_instances

    def counting(**params):
        calls.append(params["MaxCount"])
        return original(**params)

    cp.compute.client.run_instances = counting
    loop.api("POST", "/jobs", {**JOB, "tasks": 20, "max_concurrency": 20})
    loop.drain()
    assert sum(calls) == 20 and len(calls) <= 3  # pool cap 10 in the fixture: at least two pools


def test_cancel_ends_every_task_through_its_agent_or_after_a_grace_and_counts_their_work(cp, env, aws, context, clock):
    """A running task is cancelled by its agent (it uploads the outputs its program produced and its log,
    and reports how long the program ran); one whose agent does not report within the grace is ended
    without it. A cancelled job's statistics used to say 'execution 0 s, speedup 0.0x'."""
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "tasks": 4})
    tasks = cp.store.list_tasks(job_id, None, 10, None)[0]
    clock.advance(60)
    status, _ = loop.api("POST", f"/jobs/{job_id}/cancel")
    assert status == 202
    loop.drain()
    asked = cp.store.list_tasks(job_id, None, 10, None)[0]
    assert all(t.state == TaskState.RUNNING and t.desired == Desired.CANCEL for t in asked)
    assert all(instance_state(cp, t.instance_id) == "running" for t in tasks)  # not killed before their agents act
    clock.advance(10)
    for task in tasks[:2]:  # two agents stop their programs and report
        loop.send("reports", CompletionReport(job_id=job_id, index=task.index, attempt=task.attempt,
                                              instance_id=task.instance_id, sent_at=clock(), outcome="cancelled",
                                              program={"exec_seconds": 65.0, "log_tail": "stopped"}).model_dump_json())
    loop.drain()
    assert [t.state for t in cp.store.list_tasks(job_id, None, 10, None)[0]] == [
        TaskState.CANCELLED, TaskState.CANCELLED, TaskState.RUNNING, TaskState.RUNNING]
    clock.advance(cp.settings.cancel_grace_seconds)  # the other two agents are gone: ended without them
    for task in tasks[2:]:
        cp.store.record_beat(job_id, task.index, task.attempt, clock())
    sweep(cp)
    job = cp.store.get_job(job_id)
    assert job.state == JobState.CANCELLED and job.counts.get("CANCELLED") == 4 and job.active == 0
    assert all(instance_state(cp, t.instance_id) in ("shutting-down", "terminated") for t in tasks)
    assert cp.store.account_active() == 0
    # the tasks are still there to inspect, and every attempt's run is counted
    assert all(t.state == TaskState.CANCELLED for t in cp.store.list_tasks(job_id, None, 10, None)[0])
    stats = loop.api("GET", f"/jobs/{job_id}/stats")[1]["total"]
    assert stats["exec_seconds"] == 2 * 65.0 + 2 * (60 + 10 + cp.settings.cancel_grace_seconds)
    assert stats["speedup"] > 0
    ended = [e for e in cp.store.timeline(job_id, 100) if e.kind == "JobCancelled"]
    assert len(ended) == 1 and ended[0].detail["exec_seconds"] == stats["exec_seconds"]


def test_suspend_asks_running_tasks_to_checkpoint_then_resume_requeues_them(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "tasks": 2})
    loop.api("POST", f"/jobs/{job_id}/suspend")
    loop.drain()
    tasks = cp.store.list_tasks(job_id, None, 10, None)[0]
    assert all(t.desired == Desired.SUSPEND and t.state == TaskState.RUNNING for t in tasks)
    # each agent checkpoints and reports that it suspended
    for task in tasks:
        loop.send("reports", CompletionReport(job_id=job_id, index=task.index, attempt=task.attempt,
                                              instance_id=task.instance_id, sent_at=clock(), outcome="suspended",
                                              checkpoint_seq=3).model_dump_json())
    loop.drain()
    assert cp.store.get_job(job_id).state == JobState.SUSPENDED and cp.store.account_active() == 0
    loop.api("POST", f"/jobs/{job_id}/resume")
    loop.drain()
    job = cp.store.get_job(job_id)
    assert job.state == JobState.RUNNING and job.counts.get("LAUNCHING") == 2
    assert all(t.attempt == 2 and t.desired == Desired.RUN for t in cp.store.list_tasks(job_id, None, 10, None)[0])


def test_a_combine_task_runs_only_after_every_task_succeeded(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    spec = {**JOB, "tasks": 2, "combine": {"command": "python merge.py"}}
    job_id = submitted_and_running(loop, cp, spec)
    assert loop.task(job_id, 2).state == TaskState.WAITING
    for index in (0, 1):
        task = loop.task(job_id, index)
        loop.send("reports", CompletionReport(job_id=job_id, index=index, attempt=task.attempt,
                                              instance_id=task.instance_id, sent_at=clock(), outcome="completed",
                                              program={"exit_code": 0}).model_dump_json())
        loop.drain()
        expected = TaskState.WAITING if index == 0 else TaskState.LAUNCHING
        assert loop.task(job_id, 2).state == expected
    combine = loop.task(job_id, 2)
    claim(cp, AttemptRef(job_id=job_id, index=2, attempt=combine.attempt, instance_id=combine.instance_id))
    loop.send("reports", CompletionReport(job_id=job_id, index=2, attempt=combine.attempt, instance_id=combine.instance_id,
                                          sent_at=clock(), outcome="completed", program={"exit_code": 0}).model_dump_json())
    loop.drain()
    assert cp.store.get_job(job_id).state == JobState.SUCCEEDED


def test_a_failed_task_cancels_the_combine_and_fails_the_job(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "tasks": 2, "combine": {"command": "merge"}})
    for index, code in ((0, 0), (1, 9)):
        task = loop.task(job_id, index)
        loop.send("reports", CompletionReport(job_id=job_id, index=index, attempt=task.attempt,
                                              instance_id=task.instance_id, sent_at=clock(), outcome="completed",
                                              program={"exit_code": code}).model_dump_json())
    loop.drain()
    assert loop.task(job_id, 2).state == TaskState.CANCELLED
    assert cp.store.get_job(job_id).state == JobState.FAILED


def test_control_messages_delivered_twice_change_nothing_more(cp, env, aws, context):
    loop = Loop(cp, env, aws, context, duplicate=True)
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 6, "max_concurrency": 4})
    loop.drain()
    loop.drain()
    job = cp.store.get_job(accepted["job_id"])
    assert job.active == 4 and job.counts["QUEUED"] == 2
    running = cp.compute.managed_instances()
    assert len(running) == 4




def test_a_pool_without_capacity_is_skipped_for_the_next_at_no_cost_to_the_tasks(cp, env, aws, context, clock):
    from botocore.exceptions import ClientError

    loop = Loop(cp, env, aws, context)
    original = cp.compute.client.run_instances
    refused = []

    def no_capacity_in_1b(**params):
        clock.advance(0.2)  # a launch call takes time: its refusal comes after the admission
        if params["SubnetId"] == cp.settings.subnets["us-east-1b"]:
            refused.append(params["InstanceType"])
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances")
        return original(**params)

    cp.compute.client.run_instances = no_capacity_in_1b
    _, accepted = loop.api("POST", "/jobs", {**JOB, "tasks": 3})
    loop.drain()
    tasks = cp.store.list_tasks(accepted["job_id"], None, 10, None)[0]
    assert refused, "the cheapest pool (us-east-1b) was tried first"
    assert all(t.state == TaskState.LAUNCHING and not t.pool.endswith("@us-east-1b") for t in tasks)
    # A refused launch is no attempt: each task's first launched attempt is its attempt 1, with one record
    assert all(t.environment_failures == 0 and t.program_failures == 0 and t.attempt == 1 for t in tasks)
    assert all([a.number for a in cp.store.attempts(t.job_id, t.index)] == [1] for t in tasks)
    stats = cp.store.pool_stats(["c6i.large@us-east-1b"])["c6i.large@us-east-1b"]
    assert stats.running == 0 and stats.executions == 0 and stats.cooldown_until is not None
    refusals = [e for e in cp.store.timeline(accepted["job_id"], 100) if e.kind == "LaunchRefused"]
    assert len(refusals) == 3 and all(e.attempt is None for e in refusals)
    assert {(e.detail["pool"], e.detail["error"]) for e in refusals} == {
        ("c6i.large@us-east-1b", "InsufficientInstanceCapacity")}
    for task in tasks:  # the timeline reads in order: admitted, refused, admitted elsewhere
        kinds = [e.kind for e in cp.store.timeline(accepted["job_id"], 100) if e.index == task.index]
        assert kinds == ["TaskLaunching", "LaunchRefused", "TaskLaunching"], kinds


def test_a_job_past_its_timeout_is_cancelled_by_the_sweep(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "tasks": 2, "timeout": "10m"})
    clock.advance(9 * 60)
    sweep(cp)
    assert cp.store.get_job(job_id).state == JobState.RUNNING
    clock.advance(2 * 60)
    for task in cp.store.list_tasks(job_id, None, 10, None)[0]:
        cp.store.record_beat(job_id, task.index, task.attempt, clock())
    report = sweep(cp)
    assert report.timed_out == [job_id]
    clock.advance(cp.settings.cancel_grace_seconds + 1)  # its agents did not carry the cancel out
    sweep(cp)
    job = cp.store.get_job(job_id)
    assert job.state == JobState.CANCELLED and job.active == 0


def test_after_three_environment_faults_in_a_row_a_task_moves_to_on_demand(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "retries": {"environment": 10}})
    markets = []
    for _ in range(3):
        task = loop.task(job_id)
        markets.append(task.market)
        claim(cp, ref(task))
        loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=task.attempt, instance_id=task.instance_id,
                                              sent_at=clock(), outcome="environment_error",
                                              reason="disk full").model_dump_json())
        loop.drain()
    moved = loop.task(job_id)
    assert markets == ["spot", "spot", "spot"]
    assert moved.consecutive_environment_failures == 3 and moved.market == "on-demand"
    found = cp.compute.client.describe_instances(InstanceIds=[moved.instance_id])["Reservations"][0]["Instances"][0]
    assert found.get("InstanceLifecycle") != "spot"
    assert moved.program_failures == 0


def test_refused_launches_are_no_attempts_and_leave_no_stale_reason(cp, env, aws, context, clock):
    """A task refused by every pool used to show attempt #13 before its program ever ran; once it ran and
    succeeded it still showed the last refusal as its reason ('exit 0: c6i.large@...: Insufficient...')."""
    from botocore.exceptions import ClientError

    loop = Loop(cp, env, aws, context)
    original = cp.compute.client.run_instances
    capacity = {"any": False}

    def refuse_until_capacity(**params):
        if not capacity["any"]:
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances")
        return original(**params)

    cp.compute.client.run_instances = refuse_until_capacity
    _, accepted = loop.api("POST", "/jobs", JOB)
    job_id = accepted["job_id"]
    loop.drain()
    for _ in range(3):  # the reaper's reconcile comes back every minute, after the pools cooled down
        clock.advance(cp.settings.cooldown_seconds + 1)
        reconcile_job(cp, job_id)
    task = loop.task(job_id)
    refusals = [e for e in cp.store.timeline(job_id, 1000) if e.kind == "LaunchRefused"]
    assert task.state == TaskState.QUEUED and task.attempt == 0 and cp.store.attempts(job_id, 0) == []
    assert len(refusals) == 4 * len(cp.settings.pools) and task.admissions == len(refusals)
    assert task.reason.endswith(": InsufficientInstanceCapacity")
    status, shown = loop.api("GET", f"/jobs/{job_id}/tasks/0")
    assert status == 200 and shown["attempt"] == 0

    capacity["any"] = True
    clock.advance(cp.settings.cooldown_seconds + 1)
    reconcile_job(cp, job_id)
    launched = loop.task(job_id)
    assert (launched.state, launched.attempt, launched.reason) == (TaskState.LAUNCHING, 1, "")
    claim(cp, ref(launched))
    loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=1, instance_id=launched.instance_id,
                                          sent_at=clock(), outcome="completed",
                                          program={"exit_code": 0}).model_dump_json())
    loop.drain()
    status, shown = loop.api("GET", f"/jobs/{job_id}/tasks/0")
    assert (shown["state"], shown["attempt"], shown["exit_code"], shown["reason"]) == ("SUCCEEDED", 1, 0, "")
    assert [a.number for a in cp.store.attempts(job_id, 0)] == [1]
    assert loop.api("GET", f"/jobs/{job_id}/stats")[1]["total"]["executions"] == 1


def test_a_retried_attempt_does_not_show_the_exit_code_or_reason_of_the_one_before(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    job_id = submitted_and_running(loop, cp, {**JOB, "retries": {"program": 1}})
    task = loop.task(job_id)
    loop.send("reports", CompletionReport(job_id=job_id, index=0, attempt=1, instance_id=task.instance_id,
                                          sent_at=clock(), outcome="completed",
                                          program={"exit_code": 3}).model_dump_json())
    loop.drain()
    retried = loop.task(job_id)
    assert (retried.state, retried.attempt, retried.exit_code, retried.reason) == (TaskState.LAUNCHING, 2, None, "")
    assert [e.detail.get("reason") for e in cp.store.timeline(job_id, 100) if e.kind == "TaskRetrying"] == [
        "program exited with code 3; retry 1 of 1"]  # the timeline keeps why
