"""The soak's fault injection does what it says (against moto's server, as the local runtime uses it)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from spotrun_local.chaos.faults import FaultLog, FaultRates, InjectedCrash, ServiceFaults
from spotrun_local.chaos.queues import ChaosPump, QueueRates, Receipts
from spotrun_local.endpoint import moto_server
from spotrun_local.pump import SqsPump
from spotrun_local.soak import explain_dead_letter


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server()
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def client(endpoint: str, service: str, faults: ServiceFaults | None = None) -> Any:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    made = session.client(service, endpoint_url=endpoint, config=Config(retries={"mode": "standard", "max_attempts": 4}))
    if faults is not None:
        faults.install(made.meta.events)
    return made


def table(endpoint: str, name: str) -> None:
    client(endpoint, "dynamodb").create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])


def faults(**rates: float) -> ServiceFaults:
    return ServiceFaults("cp", random.Random(1), FaultLog(), FaultRates(**rates))


def test_transient_errors_are_retried_by_the_sdk_and_surfaced_ones_reach_the_caller(endpoint):
    table(endpoint, "transient")
    retried = faults(transient=1.0)
    retried.ensure = set()
    ddb = client(endpoint, "dynamodb", retried)
    with pytest.raises(ClientError) as raised:  # every try fails: the SDK retries, then gives up
        ddb.get_item(TableName="transient", Key={"pk": {"S": "a"}})
    retries = raised.value.response["ResponseMetadata"]["RetryAttempts"]
    assert retries >= 2 and retried.log.counts["cp_transient_error"] == retries + 1
    surfaced = faults(surfaced=1.0)
    with pytest.raises(ClientError):
        client(endpoint, "dynamodb", surfaced).get_item(TableName="transient", Key={"pk": {"S": "a"}})
    assert surfaced.log.counts["cp_surfaced_error"] == 1


def test_a_lost_response_applies_the_write_and_the_retry_meets_its_own_change(endpoint):
    table(endpoint, "lost")
    lost = faults(lost_response=1.0)
    lost.ensure = {"lost_response"}
    ddb = client(endpoint, "dynamodb", lost)
    lost.rates.lost_response = 1e-12  # only the ensured first write loses its answer
    with pytest.raises(ClientError) as raised:
        ddb.put_item(TableName="lost", Item={"pk": {"S": "a"}}, ConditionExpression="attribute_not_exists(pk)")
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert "Item" in client(endpoint, "dynamodb").get_item(TableName="lost", Key={"pk": {"S": "a"}})
    assert lost.log.counts["cp_lost_response"] == 1


def test_crashes_come_before_a_write_is_sent_or_after_it_succeeded(endpoint):
    table(endpoint, "crash")
    before = faults(crash_before_write=1.0)
    with pytest.raises(InjectedCrash):
        client(endpoint, "dynamodb", before).put_item(TableName="crash", Item={"pk": {"S": "b"}})
    assert "Item" not in client(endpoint, "dynamodb").get_item(TableName="crash", Key={"pk": {"S": "b"}})
    after = faults(crash_after_write=1.0)
    with pytest.raises(InjectedCrash):
        client(endpoint, "dynamodb", after).put_item(TableName="crash", Item={"pk": {"S": "c"}})
    assert "Item" in client(endpoint, "dynamodb").get_item(TableName="crash", Key={"pk": {"S": "c"}})
    reads = faults(crash_before_write=1.0, crash_after_write=1.0)
    client(endpoint, "dynamodb", reads).get_item(TableName="crash", Key={"pk": {"S": "c"}})  # reads never crash
    assert not reads.log.counts


def test_an_agents_beat_write_is_dropped_and_nothing_else(endpoint):
    """The soak's lost heartbeats: an agent's UpdateItem (its beat, its only table write) fails past the SDK's
    retries, unapplied; its other calls and the control plane's writes are not dropped."""
    table(endpoint, "beats")
    dropping = ServiceFaults("agent", random.Random(1), FaultLog(), FaultRates(drop_beat=1.0))
    ddb = client(endpoint, "dynamodb", dropping)
    ddb.put_item(TableName="beats", Item={"pk": {"S": "t"}})
    with pytest.raises(ClientError) as raised:
        ddb.update_item(TableName="beats", Key={"pk": {"S": "t"}}, UpdateExpression="SET beat = :b",
                        ExpressionAttributeValues={":b": {"N": "1"}})
    assert raised.value.response["Error"]["Code"] == "InternalServerError"
    assert "beat" not in client(endpoint, "dynamodb").get_item(TableName="beats", Key={"pk": {"S": "t"}})["Item"]
    assert dropping.log.counts == {"heartbeat_dropped": 1}
    control_plane = ServiceFaults("cp", random.Random(1), FaultLog(), FaultRates(drop_beat=1.0))
    client(endpoint, "dynamodb", control_plane).update_item(
        TableName="beats", Key={"pk": {"S": "t"}}, UpdateExpression="SET beat = :b", ExpressionAttributeValues={":b": {"N": "1"}})
    assert not control_plane.log.counts
    assert FaultRates.from_env(FaultRates(drop_beat=0.25).env()).drop_beat == 0.25  # how agents get the rate


def test_the_queue_wrapper_duplicates_holds_and_records_every_receive(endpoint):
    sqs = client(endpoint, "sqs")
    url = sqs.create_queue(QueueName="reports", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    for n in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    seen: list[int] = []
    log = FaultLog()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failed = []
        for record in event["Records"]:
            n = json.loads(record["body"])["n"]
            seen.append(n)
            if n == 0:
                log.add("cp_crash_before_write")  # as the hooks do when they crash an invocation
                failed.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failed}

    receipts = Receipts()
    pump = ChaosPump(SqsPump(sqs, url, handler, "reports"), random.Random(3), log,
                     QueueRates(duplicate=1.0, max_delay_seconds=0, hold=0.0), receipts)
    for _ in range(10):
        pump.poll_once()
    counts = log.snapshot()
    assert counts["duplicate_delivery"] == 6
    assert seen.count(0) >= 1 and len(seen) > 6  # copies were handled too
    histories = list(receipts.history.values())
    assert any("handled" in h for h in histories)
    assert any("failed (injected fault)" in h for h in histories)


def test_a_message_is_held_back_on_its_first_receive_only(endpoint):
    """Lateness must not use up the receives a dead-letter queue counts (maxReceiveCount)."""
    import time

    sqs = client(endpoint, "sqs")
    url = sqs.create_queue(QueueName="held-once", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1}))
    handled: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        handled.extend(json.loads(r["body"])["n"] for r in event["Records"])
        return {"batchItemFailures": []}

    receipts = Receipts()
    pump = ChaosPump(SqsPump(sqs, url, handler, "scheduler"), random.Random(1), FaultLog(),
                     QueueRates(duplicate=0.0, max_delay_seconds=1, hold=1.0), receipts)
    deadline = time.monotonic() + 10
    while not handled and time.monotonic() < deadline:
        pump.poll_once()
        time.sleep(0.2)
    [history] = receipts.history.values()
    assert handled == [1]
    assert history == ["received", "held", "received", "handled"]


def test_a_dead_letter_is_explained_only_by_injected_faults_hold_backs_or_crashes():
    assert explain_dead_letter(["failed (injected fault)", "held", "cut (generation 2 dropped)",
                                "failed (injected fault)", "failed (injected fault)"])
    assert not explain_dead_letter(["failed (injected fault)", "failed", "held"])
    assert not explain_dead_letter([])
