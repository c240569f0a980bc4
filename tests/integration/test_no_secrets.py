"""Nothing secret in user data, logs or the timeline: a job whose tasks' environment holds secrets runs its
whole life through the real handlers (on moto, behind the local SigV4 gateway), and every log record at
DEBUG, everything printed, the timeline (stored, served and published), the instances' user data and tags
are searched for the secrets and for the credentials in play.

The job spec has no notion of a secret variable: `parameters` are the tasks' environment, kept in each task's
item (where the agent reads them; the job's stored spec keeps only their count) and nowhere else, so every
value is treated as a secret. The attempt number that fences an agent's messages is not a secret (the API
shows it), so it is not looked for.
(tests/infrastructure/test_secrets.py checks what the stack deploys.)
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials

from spotrun.attempts import claim, commit_checkpoint
from spotrun.domain.messages import AttemptRef, CompletionReport, ProgramResult
from spotrun.domain.model import Checkpoint, TaskState
from spotrun.handlers import api, common, console, finisher, interruption, reaper, scheduler
from spotrun_cli.client import ApiClient, ApiError
from spotrun_local.gateway import LocalCredentials, new_local_credentials, start_gateway
from spotrun_local.pump import SqsPump
from tests.fuzz.support import table_items
from tests.support import eventbridge_event

# The deploying machine's (here: the control plane's) AWS credentials, shaped like AWS's, valid nowhere.
PLANTED_AWS = {
    "AWS_ACCESS_KEY_ID": "ASIAPLANTEDCTRL0PLN9",
    "AWS_SECRET_ACCESS_KEY": "pLaNtEd/CoNtRoL/pLaNe/SeCrEt/KeY+0000000",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEPLANTEDcontrolPLANEsessionTOKEN",
}


class Everything(logging.Handler):
    """Every record of spotrun's loggers (Powertools' and the modules' children of it), each kept twice:
    as Powertools prints it to CloudWatch, and with every attribute it carries."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_ = common.logger.registered_formatter

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter_.format(record))
        self.lines.append(repr(vars(record)))


@pytest.fixture
def planted(aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set after moto's dummy credentials and before any client exists: every client signs with these."""
    for name, value in PLANTED_AWS.items():
        monkeypatch.setenv(name, value)
    return PLANTED_AWS


@pytest.fixture
def logs() -> Iterator[Everything]:
    root = logging.getLogger(common.logger.name)  # "spotrun": spotrun.* loggers propagate to it and stop there
    everything, level = Everything(), root.level
    root.addHandler(everything)
    root.setLevel(logging.DEBUG)
    worker = logging.getLogger("spotrun_worker")
    worker.addHandler(everything)
    try:
        yield everything
    finally:
        root.removeHandler(everything)
        root.setLevel(level)
        worker.removeHandler(everything)


@pytest.fixture
def local_credentials() -> LocalCredentials:
    return new_local_credentials()


def test_secrets_in_a_jobs_environment_and_the_credentials_never_reach_logs_or_the_timeline(
        planted: dict[str, str], cp: Any, env: dict[str, str], aws: Any, clock: Any, context: Any,
        logs: Everything, local_credentials: LocalCredentials, capsys: pytest.CaptureFixture[str]) -> None:
    assert aws.get_credentials().secret_key == planted["AWS_SECRET_ACCESS_KEY"]  # what the clients sign with
    password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    spec = {"name": "with-secrets", "command": ["python", "app.py"], "checkpoint": {"method": "signal"},
            "parameters": [{"DB_PASSWORD": password, "API_TOKEN": token, "MODE": "fast"},
                           {"DB_PASSWORD": password, "API_TOKEN": token, "MODE": "slow"}]}
    ui_token = f"ui-{uuid.uuid4().hex}"
    secrets = {"DB_PASSWORD": password, "API_TOKEN": token, **planted,
               "local secret key": local_credentials.secret_access_key, "local UI token": ui_token}

    sqs, sns = aws.client("sqs", region_name="us-east-1"), aws.client("sns", region_name="us-east-1")
    notified = sqs.create_queue(QueueName="notifications-probe")["QueueUrl"]
    sns.subscribe(TopicArn=cp.settings.notify_topic_arn, Protocol="sqs", ReturnSubscriptionArn=True,
                  Endpoint=sqs.get_queue_attributes(QueueUrl=notified, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    urls = json.loads(env["SPOTRUN_QUEUE_URLS"])
    pumps = {name: SqsPump(sqs, urls[queue], partial(handler, control=cp), name) for name, queue, handler in (
        ("scheduler", "scheduler", scheduler.handler),
        ("finisher", "reports", finisher.handler), ("interruption", "interruptions", interruption.handler))}

    def drain() -> None:
        for _ in range(20):
            if not sum(pump.drain() for pump in pumps.values()):
                return

    def send(queue: str, body: str) -> None:
        sqs.send_message(QueueUrl=urls[queue], MessageBody=body)

    def ref(task: Any) -> AttemptRef:
        return AttemptRef(job_id=task.job_id, index=task.index, attempt=task.attempt, instance_id=task.instance_id)

    gateway = start_gateway(partial(api.handler, control=cp), local_credentials, ui_token=ui_token,
                            console=partial(console.handler, control=cp))
    try:
        client = ApiClient(gateway.url, Credentials(local_credentials.access_key_id,
                                                    local_credentials.secret_access_key), "us-east-1")
        # submitted through the gateway as the CLI does (SigV4 with the local credentials), then run
        job_id = client.submit(spec)["job_id"]
        drain()
        tasks = [cp.store.get_task(job_id, index) for index in (0, 1)]
        assert all(t.state == TaskState.LAUNCHING for t in tasks)
        assert cp.store.task_environment(job_id, 0)["DB_PASSWORD"] == password  # where the agent reads it
        for task in tasks:
            claim(cp, ref(task))
        clock.advance(30)
        for task in tasks:
            cp.store.record_beat(job_id, task.index, task.attempt, clock(), 0.4)
        assert commit_checkpoint(cp, ref(tasks[0]), Checkpoint(1, f"checkpoints/{job_id}/0/1", 1, 2048, clock(), "signal"))
        # messages that are dropped carry the secrets in the fields that are wrong
        send("reports", json.dumps({**ref(tasks[1]).model_dump(), "sent_at": clock().isoformat(), "outcome": "completed",
                                    "program": {"exit_code": 0, "log_tail": f"{token} " + "x" * 9000}}))
        send("reports", json.dumps({**ref(tasks[1]).model_dump(), "sent_at": password, "outcome": "completed"}))
        drain()
        # task 0 is reclaimed, resumes on a new instance and succeeds; task 1 fails on its own
        clock.advance(60)
        send("interruptions", json.dumps(eventbridge_event(
            "EC2 Spot Instance Interruption Warning", {"instance-id": tasks[0].instance_id, "instance-action": "terminate"},
            at=clock())))
        drain()
        second = cp.store.get_task(job_id, 0)
        assert second.attempt == 2
        claim(cp, ref(second))
        clock.advance(120)
        send("reports", CompletionReport(**ref(tasks[0]).model_dump(), sent_at=clock(), outcome="interrupted",
                                         checkpoint_seq=1, unsaved_seconds=3.5).model_dump_json())
        send("reports", CompletionReport(**ref(second).model_dump(), sent_at=clock(), outcome="completed",
                                         program=ProgramResult(exit_code=0, exec_seconds=80.0,
                                                               log_tail="done")).model_dump_json())
        send("reports", CompletionReport(**ref(tasks[1]).model_dump(), sent_at=clock(), outcome="completed",
                                         program=ProgramResult(exit_code=3, exec_seconds=10.0,
                                                               log_tail="config rejected")).model_dump_json())
        drain()
        assert [cp.store.get_task(job_id, i).state for i in (0, 1)] == [TaskState.SUCCEEDED, TaskState.FAILED]
        reaper.handler({}, context, control=cp)
        clock.advance(3600)
        reaper.handler({}, context, control=cp)

        # the owner reads the job back, its tasks and the timeline
        views = [client.get_job(job_id), client.list_tasks(job_id), client.get_task(job_id, 0)]
        assert views[0]["spec"]["parameter_count"] == 2
        served = client.events(job_id)
        wrong = ApiClient(gateway.url, Credentials(local_credentials.access_key_id, password), "us-east-1")
        with pytest.raises(ApiError, match="403"):
            wrong.get_job(job_id)
        # the console's widgets (the dashboard's, served locally), with the page's token as the page sends it
        pages = []
        for params in ({"view": "jobs"}, {"view": "job", "job_id": job_id}, {"view": "job", "job_id": job_id, "task": 1},
                       {"view": "log", "job_id": job_id, "task": 0, "attempt": 1, "whole": True}):
            answer = requests.post(f"{gateway.url}/console/call?token={ui_token}", json={"params": params}, timeout=10)
            assert answer.status_code == 200, answer.text
            pages.append(answer.text)
        assert job_id in pages[1] and "config rejected" not in pages[0]
        assert requests.post(f"{gateway.url}/console/call?token={password}", json={"params": {}},
                             timeout=5).status_code == 403
    finally:
        gateway.stop()

    printed = capsys.readouterr()
    stored_timeline = [item for item in table_items(cp) if item["pk"]["S"].startswith("EVENTS#")]
    assert len(stored_timeline) >= 8 and len(served) == len(stored_timeline)
    notifications = _receive_all(sqs, notified)
    assert notifications, "no timeline notification published"
    ec2 = cp.compute.client
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(instances) >= 3
    launched = [json.dumps({"tags": i.get("Tags", []), "user_data": ec2.describe_instance_attribute(
        InstanceId=i["InstanceId"], Attribute="userData").get("UserData", {})}) for i in instances]

    places = {
        "logs": "\n".join(logs.lines), "stdout": printed.out, "stderr": printed.err,
        "the stored timeline": json.dumps(stored_timeline), "the served timeline": json.dumps(served),
        "the published timeline": json.dumps(notifications), "the instances' user data and tags": "\n".join(launched),
        "the API's job and task views": json.dumps(views), "the console's pages": "\n".join(pages),
    }
    assert len(logs.lines) > 20 and "dropped a malformed message" in places["logs"]
    leaks = {(where, name) for where, text in places.items() for name, value in secrets.items() if value in text}
    assert leaks == set()


def _receive_all(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for n, m in enumerate(messages)])
    return bodies


def test_the_handlers_neither_log_nor_trace_events_and_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools would log the whole event with POWERTOOLS_LOGGER_LOG_EVENT=true and put every response into
    X-Ray (the API's hold job specs and presigned URLs): spotrun's handlers say no in the code itself."""
    import importlib

    from aws_lambda_powertools.tracing.tracer import Tracer

    captured: list[bool] = []
    original = Tracer._add_response_as_metadata

    def spy(self: Any, method_name: Any = None, data: Any = None, subsegment: Any = None,
            capture_response: Any = None) -> None:
        captured.append(capture_response)
        original(self, method_name=method_name, data=data, subsegment=subsegment, capture_response=capture_response)

    monkeypatch.setattr(Tracer, "_add_response_as_metadata", spy)
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    monkeypatch.setenv("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "true")
    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage() + repr(vars(record)))

    keep = Keep(logging.DEBUG)
    logging.getLogger(common.logger.name).addHandler(keep)
    marker = f"marker-{uuid.uuid4().hex}"
    try:
        for module in (api, finisher):  # decorated at import: re-import under the environment above
            importlib.reload(module)
        from tests.support import LambdaContextStub, api_event

        answer = api.handler(api_event("GET", f"/nope/{marker}"), LambdaContextStub(), control=object())
        assert answer["statusCode"] == 404
        from tests.fuzz.support import sqs_event

        answer = finisher.handler(sqs_event(json.dumps({"marker": marker})), LambdaContextStub(), control=object())
        assert answer == {"batchItemFailures": []}
    finally:
        logging.getLogger(common.logger.name).removeHandler(keep)
        monkeypatch.undo()
        for module in (api, finisher):
            importlib.reload(module)
    assert captured == [False, False]
    assert not any(marker in line for line in logged)
