"""A worker image that cannot run the job's checkpoint method is reported once, as the image's fault,
and tasks move on: the one that met it fails at once with a reason that says what to do, and while
the note stands, queued tasks needing that method fail at admission without booting the image again.
Real agents (in this process) and the real handlers against moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spotrun.domain.model import JobState, Scope, TaskState
from spotrun.images import NOTE_HOLDS
from spotrun.provision import WORKER_IMAGE_ID
from spotrun_cli.render import render_events, render_tasks
from spotrun_worker.bootcheck import ImageCheck, check_image
from tests.integration.test_outputs import run_agent
from tests.integration.test_task_flow import Loop

PROBLEM = ("dmtcp: dmtcp_coordinator, dmtcp_launch, dmtcp_command and dmtcp_restart not found in /opt/dmtcp/bin "
           "(SPOTRUN_DMTCP_BIN); install DMTCP 4.2.0 or choose checkpoint.method: signal|none")
NO_DMTCP = ImageCheck(WORKER_IMAGE_ID, {"dmtcp": PROBLEM})
REASON = f"environment: worker image {WORKER_IMAGE_ID}: {PROBLEM}"


def job(method: str | None = None, tasks: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "pi", "command": "echo 3.14 > pi.txt", "outputs": ["pi.txt"], "tasks": tasks,
                            "retries": {"environment": 5}, "resources": {"vcpus": 2, "memory_gib": 4}}
    if method:
        spec["checkpoint"] = {"method": method}
    return spec


class Ec2Calls:
    def __init__(self) -> None:
        self.terminated: list[str] = []

    def terminate_instances(self, InstanceIds: list[str]) -> None:  # noqa: N803 - boto3's name
        self.terminated.extend(InstanceIds)


def subscribe_to_notifications(aws: Any, cp: Any) -> str:
    sqs, sns = aws.client("sqs", region_name="us-east-1"), aws.client("sns", region_name="us-east-1")
    url = sqs.create_queue(QueueName="notifications-probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=cp.settings.notify_topic_arn, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return url


def notifications(aws: Any, url: str) -> list[dict[str, Any]]:
    sqs = aws.client("sqs", region_name="us-east-1")
    bodies: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for n, m in enumerate(messages)])
    return bodies


def instances(cp: Any) -> int:
    pages = cp.compute.client.get_paginator("describe_instances").paginate()
    return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])


@pytest.mark.parametrize("duplicate", [False, True], ids=["once", "every-message-twice"])
def test_an_image_without_dmtcp_fails_the_task_once_and_says_what_to_do(cp, env, aws, context, tmp_path, capsys,
                                                                          duplicate):
    loop = Loop(cp, env, aws, context, duplicate=duplicate)
    _, accepted = loop.api("POST", "/jobs", job())  # checkpoint.method defaults to dmtcp
    job_id = accepted["job_id"]
    loop.drain()
    launched = loop.task(job_id)
    ec2 = Ec2Calls()

    code = run_agent(cp, env, aws, launched.instance_id, tmp_path, image=NO_DMTCP, ec2=ec2)
    loop.drain()

    assert code == 5 and ec2.terminated == [launched.instance_id]  # no claim, no program, no reuse
    task = loop.task(job_id)
    # Failed at once, with its environment retries untouched by new boots of the same image
    assert task.state == TaskState.FAILED and task.attempt == 1 and task.reason == REASON
    assert task.started_at is None  # never claimed
    [attempt] = cp.store.attempts(job_id, 0)
    assert attempt.scope == Scope.ENVIRONMENT
    assert cp.store.get_job(job_id).state == JobState.FAILED
    # The API, the timeline and the CLI show the whole reason; the fault is on the timeline once
    _, tasks = loop.api("GET", f"/jobs/{job_id}/tasks")
    assert tasks["tasks"][0]["reason"] == REASON and REASON in render_tasks(tasks["tasks"])
    _, events = loop.api("GET", f"/jobs/{job_id}/events")
    faults = [e for e in events["events"] if e["kind"] == "WorkerImageFault"]
    assert len(faults) == 1
    assert faults[0]["detail"]["image_id"] == WORKER_IMAGE_ID and faults[0]["detail"]["method"] == "dmtcp"
    assert faults[0]["detail"]["reason"] == REASON and f"reason={REASON}" in render_events(events["events"])
    [failed] = [e for e in events["events"] if e["kind"] == "TaskFailed"]
    assert failed["detail"]["fault"] == "image" and failed["detail"]["image_id"] == WORKER_IMAGE_ID
    # ... and counted once as the metric the stack alarms on, however often the report was delivered
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(sum(m.get("WorkerImageFaults", [])) for m in emitted) == 1


def test_while_the_note_stands_tasks_needing_dmtcp_fail_at_admission_without_a_boot(cp, env, aws, context, tmp_path,
                                                                                   clock):
    loop = Loop(cp, env, aws, context)
    notified = subscribe_to_notifications(aws, cp)
    _, first = loop.api("POST", "/jobs", job())
    loop.drain()
    met = loop.task(first["job_id"])
    run_agent(cp, env, aws, met.instance_id, tmp_path, image=NO_DMTCP)
    loop.drain()
    booted = instances(cp)
    notifications(aws, notified)  # what the first job published

    _, second = loop.api("POST", "/jobs", job(tasks=3))
    _, other_method = loop.api("POST", "/jobs", job("signal"))
    loop.drain()

    for index in range(3):
        task = loop.task(second["job_id"], index)
        assert task.state == TaskState.FAILED and task.attempt == 0 and task.reason == REASON
    assert cp.store.get_job(second["job_id"]).state == JobState.FAILED
    _, events = loop.api("GET", f"/jobs/{second['job_id']}/events")
    assert not [e for e in events["events"] if e["kind"] == "WorkerImageFault"]  # noted once, on the first job
    failed = [n for n in notifications(aws, notified) if n["job_id"] == second["job_id"] and n["event"] == "TaskFailed"]
    assert sorted(n["task"] for n in failed) == [0, 1, 2] and {n["detail"]["reason"] for n in failed} == {REASON}
    # The image can still run what it has: a signal job boots and runs on it
    assert loop.task(other_method["job_id"]).state == TaskState.LAUNCHING
    assert instances(cp) == booted + 1

    # A lapsed note lets the next task try the image again (a fixed image has a new id anyway)
    clock.advance(NOTE_HOLDS.total_seconds() + 1)
    _, third = loop.api("POST", "/jobs", job())
    loop.drain()
    assert loop.task(third["job_id"]).state == TaskState.LAUNCHING


def test_an_image_that_has_the_method_runs_the_task(cp, env, aws, context, tmp_path):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", job("none"))
    loop.drain()
    task = loop.task(accepted["job_id"])
    assert run_agent(cp, env, aws, task.instance_id, tmp_path, image=NO_DMTCP) == 0
    loop.drain()
    assert loop.task(accepted["job_id"]).state == TaskState.SUCCEEDED


def test_the_boot_check_names_what_the_image_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(tmp_path))
    check = check_image("ami-0123456789abcdef0")
    assert check.unavailable == {"dmtcp": (
        f"dmtcp: dmtcp_coordinator, dmtcp_launch, dmtcp_command and dmtcp_restart not found in {tmp_path} "
        "(SPOTRUN_DMTCP_BIN); install DMTCP 4.2.0 or choose checkpoint.method: signal|none")}
    assert check.problem("signal") is None and check.problem("none") is None
    assert check.view()["methods"]["dmtcp"]["available"] is False


def test_a_checkpointer_gone_after_the_boot_check_is_still_the_images_fault(cp, env, aws, context, tmp_path,
                                                                          monkeypatch):
    empty = tmp_path / "no-dmtcp"
    empty.mkdir()
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(empty))
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", job())
    loop.drain()
    task = loop.task(accepted["job_id"])
    assert run_agent(cp, env, aws, task.instance_id, tmp_path / "work", image=ImageCheck(WORKER_IMAGE_ID)) == 5
    loop.drain()
    failed = loop.task(accepted["job_id"])
    assert failed.state == TaskState.FAILED
    assert failed.reason == (f"environment: worker image {WORKER_IMAGE_ID}: dmtcp: dmtcp_coordinator, dmtcp_launch, "
                             f"dmtcp_command and dmtcp_restart not found in {empty} (SPOTRUN_DMTCP_BIN); install DMTCP "
                             "4.2.0 or choose checkpoint.method: signal|none")


def test_a_checkpointer_that_will_not_run_on_one_instance_is_that_pools_fault(cp, env, aws, context, tmp_path,
                                                                             monkeypatch):
    """The image has DMTCP (the boot check passed) but its coordinator will not start on this instance:
    the task moves on to another pool, and the pool's failure counts against it for every task."""
    tools = tmp_path / "dmtcp-bin"
    tools.mkdir()
    scripts = {"dmtcp_launch": "echo 'dmtcp_launch (DMTCP) 4.2.0'",
               "dmtcp_coordinator": "echo 'socket: Address family not supported by protocol'; exit 1",
               "dmtcp_command": "exit 1", "dmtcp_restart": "exit 1"}
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(tools))
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", job())
    loop.drain()
    first = loop.task(accepted["job_id"])
    assert run_agent(cp, env, aws, first.instance_id, tmp_path / "work", image=check_image(WORKER_IMAGE_ID)) == 4
    loop.drain()

    moved = loop.task(accepted["job_id"])
    assert moved.attempt == 2 and moved.state == TaskState.LAUNCHING  # retried at once ...
    assert first.pool in moved.avoid_pools and moved.pool != first.pool  # ... in another pool
    assert moved.environment_failures == 1
    _, events = loop.api("GET", f"/jobs/{accepted['job_id']}/events")
    [interrupted] = [e for e in events["events"] if e["kind"] == "EnvironmentFault"]  # not a spot interruption
    assert interrupted["detail"]["reason"].startswith(
        "environment: dmtcp: could not start the program on this instance: the DMTCP coordinator did not start")
    assert "Address family not supported" in interrupted["detail"]["reason"]
    assert not [e for e in events["events"] if e["kind"] == "WorkerImageFault"]  # the image is fine
    assert cp.store.pool_stats([first.pool])[first.pool].failures == 1
