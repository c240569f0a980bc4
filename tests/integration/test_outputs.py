"""Declared outputs are never silently missing: a real agent runs a real program against the real
handlers (moto), and a program that ends well without its declared output does not end SUCCEEDED."""

from __future__ import annotations

from typing import Any

from spotrun.domain.model import JobState, Scope, TaskState
from spotrun.provision import WORKER_IMAGE_ID
from spotrun_cli.render import render_events, render_tasks
from spotrun_worker.agent import Agent, AgentConfig
from spotrun_worker.routes import InProcessRoutes
from tests.integration.test_task_flow import Loop


class NoNotices:
    """The metadata service of an instance nobody reclaims, booted from the provisioned image."""

    def __init__(self, instance_id: str):
        self.id = instance_id

    def instance_id(self) -> str:
        return self.id

    def get(self, path: str) -> str | None:
        return {"ami-id": WORKER_IMAGE_ID, "instance-id": self.id}.get(path)

    def spot_action(self) -> None:
        return None


def run_agent(cp: Any, env: dict[str, str], aws: Any, instance_id: str, work_root: Any, image: Any = None,
              ec2: Any = None) -> int:
    config = AgentConfig(table=cp.settings.table, bucket=cp.settings.bucket,
                         report_queue_url=env["SPOTRUN_REPORT_QUEUE_URL"], work_root=work_root,
                         heartbeat_seconds=5, metadata_poll_seconds=1, reuse_instances=False,
                         claim_wait_seconds=5)
    routes = InProcessRoutes(cp, instance_id, s3=aws.client("s3"), sqs=aws.client("sqs"))
    return Agent(config, routes, NoNotices(instance_id), ec2=ec2, clock=cp.clock, image=image).run()


def job(outputs: list[str], retries: int = 0) -> dict[str, Any]:
    return {"name": "pi", "command": "echo 3.14159 > pi.txt && echo log > run.log",
            "outputs": outputs, "checkpoint": {"method": "none"}, "retries": {"program": retries},
            "resources": {"vcpus": 2, "memory_gib": 4}}


def run_once(loop: Loop, cp: Any, env: dict[str, str], aws: Any, tmp_path: Any, job_id: str) -> Any:
    loop.drain()
    task = loop.task(job_id)
    assert task.state == TaskState.LAUNCHING, task
    assert run_agent(cp, env, aws, task.instance_id, tmp_path / task.instance_id) == 0
    loop.drain()
    return loop.task(job_id)


def test_a_program_without_its_declared_output_fails_and_says_which(cp, env, aws, context, tmp_path):
    loop = Loop(cp, env, aws, context)
    status, accepted = loop.api("POST", "/jobs", job(["pi.txt", "result.json"]))
    assert status == 202, accepted
    job_id = accepted["job_id"]

    task = run_once(loop, cp, env, aws, tmp_path, job_id)

    reason = "program exited with code 0 but declared output result.json matched no file"
    assert task.state == TaskState.FAILED and task.exit_code == 0 and task.reason == reason
    assert cp.store.get_job(job_id).state == JobState.FAILED
    # What was there was uploaded all the same
    s3 = aws.client("s3")
    uploaded = s3.get_object(Bucket=cp.settings.bucket, Key=f"jobs/{job_id}/outputs/0/pi.txt")["Body"].read()
    assert uploaded == b"3.14159\n"
    # The API, the timeline and the CLI say so
    _, tasks = loop.api("GET", f"/jobs/{job_id}/tasks")
    assert tasks["tasks"][0]["state"] == "FAILED" and tasks["tasks"][0]["reason"] == reason
    _, events = loop.api("GET", f"/jobs/{job_id}/events")
    [failed] = [e for e in events["events"] if e["kind"] == "TaskFailed"]
    assert failed["detail"]["reason"] == reason and failed["detail"]["missing_outputs"] == ["result.json"]
    assert f"exit 0: {reason}" in render_tasks(tasks["tasks"])
    assert f"reason={reason}" in render_events(events["events"])
    [attempt] = cp.store.attempts(job_id, 0)
    assert attempt.scope == Scope.PROGRAM and attempt.exit_code == 0  # the program's fault, not the pool's


def test_a_missing_output_is_retried_only_as_the_program_budget_allows(cp, env, aws, context, tmp_path):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", job(["result.json"], retries=1))
    job_id = accepted["job_id"]

    first = run_once(loop, cp, env, aws, tmp_path, job_id)
    assert first.state == TaskState.LAUNCHING and first.attempt == 2 and first.program_failures == 1  # retried
    _, events = loop.api("GET", f"/jobs/{job_id}/events")
    [retrying] = [e for e in events["events"] if e["kind"] == "TaskRetrying"]
    assert retrying["detail"]["reason"] == ("program exited with code 0 but declared output result.json matched "
                                            "no file; retry 1 of 1")
    second = run_once(loop, cp, env, aws, tmp_path, job_id)
    assert second.state == TaskState.FAILED and second.attempt == 2 and second.program_failures == 2


def test_a_program_that_writes_its_declared_outputs_succeeds(cp, env, aws, context, tmp_path):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", job(["pi.txt", "*.log"]))
    task = run_once(loop, cp, env, aws, tmp_path, accepted["job_id"])
    assert task.state == TaskState.SUCCEEDED and task.reason == ""
    listed = aws.client("s3").list_objects_v2(Bucket=cp.settings.bucket,
                                              Prefix=f"jobs/{accepted['job_id']}/outputs/0/")["Contents"]
    assert sorted(item["Key"].rsplit("/", 1)[1] for item in listed) == ["pi.txt", "run.log"]
