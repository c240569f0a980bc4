"""Per-task isolation on the local runtime: a worker reaches its own task and nothing else.

Two tasks run on two local instances. With the identity the runtime gave the first task's agent (its
instance role session, as the metadata service hands it out on EC2) and the task credentials the
worker routes hand that agent, the test reaches for the second task's items, checkpoint files and
outputs, and speaks for its attempt: every try is refused, by the IAM guard (the same policy
documents the stack deploys) or by the worker routes, and the second task runs on untouched.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from spotrun.domain.model import JobState, TaskState
from spotrun_local import demo
from spotrun_worker.routes import HttpRoutes, RouteError
from tests.local.test_end_to_end import explain, steady_runtime, wait_for

pytestmark = pytest.mark.slow


def refused(call, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == code, caught.value.response["Error"]


def test_an_agent_cannot_touch_another_task(tmp_path, monkeypatch):
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _):
        from spotrun.jobs import submit_job

        spec = demo.job_spec(12_000_000, 2)
        del spec["combine"]
        job, _ = submit_job(runtime.cp, spec, "test")
        store, bucket, table = runtime.cp.store, runtime.cp.settings.bucket, runtime.cp.settings.table
        wait_for(lambda: all(t.state == TaskState.RUNNING for t in store.list_tasks(job.job_id, None, 10, None)[0]),
                 120, "both tasks to run", lambda: explain(runtime, job.job_id))
        assert runtime.guard.denials == [], "the agents needed nothing their policies refuse"
        mine, other = store.get_task(job.job_id, 0), store.get_task(job.job_id, 1)

        # The first agent's own identity: the instance role session the runtime gave its instance.
        instance_key = next(key for key, (_, arn) in runtime._instance_credentials.items()
                            if arn.endswith("/" + mine.instance_id))
        instance_credentials, _ = runtime._instance_credentials[instance_key]
        instance = boto3.session.Session(aws_access_key_id=instance_credentials.access_key_id,
                                          aws_secret_access_key=instance_credentials.secret_access_key,
                                          region_name="us-east-1")
        # With it alone, no task data at all.
        refused(lambda: instance.client("dynamodb").get_item(
            TableName=table, Key={"pk": {"S": f"TASK#{job.job_id}#000000"}, "sk": {"S": "TASK"}}), "AccessDeniedException")
        refused(lambda: instance.client("s3").list_objects_v2(Bucket=bucket, Prefix="checkpoints/"), "AccessDenied")

        # Through the worker routes, as the agent does: its own attempt and credentials for its own task.
        routes = HttpRoutes(runtime.worker_routes.url, instance, "us-east-1")
        routes.configure(table)
        assignment = routes.session()
        assert assignment is not None and (assignment.ref.index, assignment.ref.attempt) == (0, mine.attempt)
        s3, dynamodb, sqs = routes.s3, routes.store.client, routes.sqs
        assert routes.store.get_task(job.job_id, 0).index == 0  # its own item reads fine
        assert routes.store.record_beat(job.job_id, 0, mine.attempt, runtime.cp.clock(), 0.5)  # and takes its beat
        # Its own item's other attributes are the control plane's: refused, even beside the beat.
        own_key = {"pk": {"S": f"TASK#{job.job_id}#000000"}, "sk": {"S": "TASK"}}
        refused(lambda: dynamodb.update_item(TableName=table, Key=own_key, UpdateExpression="SET #s = :s",
                                             ExpressionAttributeNames={"#s": "state"},
                                             ExpressionAttributeValues={":s": {"S": "SUCCEEDED"}}), "AccessDeniedException")
        refused(lambda: dynamodb.update_item(TableName=table, Key=own_key, UpdateExpression="SET beat = :b, attempt = :a",
                                             ExpressionAttributeValues={":b": {"M": {}}, ":a": {"N": "99"}}),
                "AccessDeniedException")
        s3.put_object(Bucket=bucket, Key=f"jobs/{job.job_id}/outputs/0/probe.txt", Body=b"mine")

        # The other task's item, state index, checkpoints, outputs and logs: refused.
        other_key = {"pk": {"S": f"TASK#{job.job_id}#000001"}, "sk": {"S": "TASK"}}
        refused(lambda: dynamodb.get_item(TableName=table, Key=other_key), "AccessDeniedException")
        refused(lambda: dynamodb.update_item(TableName=table, Key=other_key, UpdateExpression="SET desired = :c",
                                             ExpressionAttributeValues={":c": {"S": "CANCEL"}}), "AccessDeniedException")
        refused(lambda: routes.store.record_beat(job.job_id, 1, other.attempt, runtime.cp.clock()), "AccessDeniedException")
        refused(lambda: dynamodb.query(TableName=table, KeyConditionExpression="pk = :p",
                                       ExpressionAttributeValues={":p": {"S": f"TASK#{job.job_id}#000001"}}),
                "AccessDeniedException")
        refused(lambda: dynamodb.get_item(TableName=table, Key={"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}}),
                "AccessDeniedException")
        refused(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"checkpoints/{job.job_id}/1/"), "AccessDenied")
        refused(lambda: s3.put_object(Bucket=bucket, Key=f"checkpoints/{job.job_id}/1/00000099/manifest.json",
                                      Body=b"{}"), "AccessDenied")
        refused(lambda: s3.put_object(Bucket=bucket, Key=f"jobs/{job.job_id}/outputs/1/count.json", Body=b"{}"),
                "AccessDenied")
        refused(lambda: s3.get_object(Bucket=bucket, Key=f"jobs/{job.job_id}/outputs/1/count.json"), "AccessDenied")
        refused(lambda: sqs.receive_message(QueueUrl=runtime.cp.settings.report_queue_url), "AccessDenied")

        # Speaking for the other attempt through the routes: the routes answer for the caller's own only.
        with pytest.raises(RouteError) as caught:
            routes._post("claim", {"attempt": other.attempt + 1})
        assert caught.value.status == 409

        denied = {(d.action, d.resource.rsplit(":", 1)[-1]) for d in runtime.guard.denials}
        assert ("dynamodb:GetItem", "table/spotrun-state") in denied and ("s3:PutObject", f"{bucket}/checkpoints/"
                                                                          f"{job.job_id}/1/00000099/manifest.json") in denied
        assert all(d.principal_arn.endswith(("/" + mine.instance_id, f"/{job.job_id}.0.{mine.attempt}"))
                   for d in runtime.guard.denials)

        # The other task was not disturbed; the job finishes.
        finished = wait_for(lambda: store.get_job(job.job_id).state in (JobState.SUCCEEDED, JobState.FAILED)
                            and store.get_job(job.job_id), 240, "the job to finish", lambda: explain(runtime, job.job_id))
        assert finished.state == JobState.SUCCEEDED
