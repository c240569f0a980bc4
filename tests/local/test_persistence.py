"""The local runtime's state journal: what moto answered as done survives a restart of the process.

Each test runs moto's server as the runtime builds it (capture inside the DynamoDB lock), makes
changes through boto3 the way the handlers, agents and CLI do, drops the server, and starts a new
one from the same directory (moto reset, resources provisioned again, the journal put back).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from spotrun_local.endpoint import ACCOUNT, REGION
from spotrun_local.persistence import JournalError, StateJournal
from tests.local.support import provisioned_moto


@contextlib.contextmanager
def local_aws(state: Path, monkeypatch: pytest.MonkeyPatch, **journal_options: Any) -> Iterator[tuple[Any, dict, StateJournal]]:
    """One life of the local AWS: moto with a journal in `state`, resources provisioned, the state put back."""
    journal = StateJournal(state, **journal_options)
    try:
        with provisioned_moto(monkeypatch, journal) as (session, env):
            yield session, env, journal
    finally:
        journal.close()


def view(session: Any, env: dict[str, str]) -> dict[str, Any]:
    """Everything the journal keeps, as clients see it (queues as moto holds them: receiving would change them)."""
    from moto.sqs.models import sqs_backends

    dynamodb, s3 = session.client("dynamodb"), session.client("s3")
    items = sorted(json.dumps(i, sort_keys=True) for i in dynamodb.scan(TableName=env["SPOTRUN_TABLE"])["Items"])
    objects = {}
    for entry in s3.list_objects_v2(Bucket=env["SPOTRUN_BUCKET"]).get("Contents", []):
        got = s3.get_object(Bucket=env["SPOTRUN_BUCKET"], Key=entry["Key"])
        objects[entry["Key"]] = (hashlib.sha256(got["Body"].read()).hexdigest(), got["ContentType"], got["Metadata"],
                                 got["ETag"])
    queues = {name: sorted((m.id, m.body, json.dumps(m.message_attributes, sort_keys=True)) for m in queue._messages)
              for name, queue in sqs_backends[ACCOUNT][REGION].queues.items()}
    return {"items": items, "objects": objects, "queues": queues}


def test_every_kind_of_change_moto_answered_comes_back_after_a_restart(tmp_path, monkeypatch):
    with local_aws(tmp_path, monkeypatch) as (session, env, journal):
        table, bucket = env["SPOTRUN_TABLE"], env["SPOTRUN_BUCKET"]
        dynamodb, s3, sqs = session.client("dynamodb"), session.client("s3"), session.client("sqs")
        queues = json.loads(env["SPOTRUN_QUEUE_URLS"])

        def key(n: int) -> dict[str, Any]:
            return {"pk": {"S": f"JOB#{n}"}, "sk": {"S": "JOB"}}

        dynamodb.put_item(TableName=table, Item={**key(1), "state": {"S": "QUEUED"}, "n": {"N": "1"},
                                                 "spec": {"M": {"tasks": {"L": [{"N": "1"}, {"S": "x"}]}}},
                                                 "tags": {"SS": ["a", "b"]}})
        dynamodb.update_item(TableName=table, Key=key(1), UpdateExpression="SET #s = :s ADD n :one",
                             ExpressionAttributeNames={"#s": "state"},
                             ExpressionAttributeValues={":s": {"S": "RUNNING"}, ":one": {"N": "1"}})
        dynamodb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {**key(n), "v": {"N": str(n)}}}}
                                                        for n in range(2, 6)]})
        dynamodb.batch_write_item(RequestItems={table: [{"DeleteRequest": {"Key": key(5)}}]})
        dynamodb.delete_item(TableName=table, Key=key(4))
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {**key(6), "v": {"N": "6"}}}},
            {"Update": {"TableName": table, "Key": key(2), "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"N": "20"}}}},
            {"Delete": {"TableName": table, "Key": key(3)}}])
        with pytest.raises(ClientError):  # refused: none of it happened, none of it is journaled
            dynamodb.transact_write_items(TransactItems=[
                {"Put": {"TableName": table, "Item": {**key(7), "v": {"N": "7"}}}},
                {"ConditionCheck": {"TableName": table, "Key": key(1), "ConditionExpression": "attribute_not_exists(pk)"}}])

        s3.put_object(Bucket=bucket, Key="jobs/j/spec.json", Body=b"{}", ContentType="application/json",
                      Metadata={"origin": "test"})
        s3.put_object(Bucket=bucket, Key="jobs/j/outputs/0/a.txt", Body=b"first")
        s3.put_object(Bucket=bucket, Key="jobs/j/outputs/0/a.txt", Body=b"second")  # supersedes the first body
        big = bytes(range(256)) * (6 * 4096)  # 6 MiB: two parts
        s3.upload_fileobj(io.BytesIO(big), bucket, "checkpoints/j/0/00000001/files/image",
                          Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
        s3.copy_object(Bucket=bucket, Key="jobs/j/copy", CopySource={"Bucket": bucket, "Key": "jobs/j/spec.json"})
        for name in ("gone-1", "gone-2", "gone-3"):
            s3.put_object(Bucket=bucket, Key=name, Body=name.encode())
        s3.delete_object(Bucket=bucket, Key="gone-1")
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "gone-2"}, {"Key": "gone-3"}]})
        url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "uploads/u/input.csv"})
        assert requests.put(url, data=b"1,2,3\n", timeout=10).status_code == 200  # as the CLI uploads inputs

        sqs.send_message(QueueUrl=json.loads(env["SPOTRUN_DLQ_URLS"])["reports"], MessageBody="dead-1")
        sqs.send_message_batch(QueueUrl=queues["reports"], Entries=[{"Id": str(n), "MessageBody": f"report-{n}"}
                                                                    for n in range(3)])
        received = sqs.receive_message(QueueUrl=queues["reports"], MaxNumberOfMessages=1)["Messages"][0]
        sqs.delete_message(QueueUrl=queues["reports"], ReceiptHandle=received["ReceiptHandle"])
        sqs.receive_message(QueueUrl=queues["reports"], MaxNumberOfMessages=1, VisibilityTimeout=600)  # in flight: kept
        session.client("sns").publish(TopicArn=env["SPOTRUN_CONTROL_TOPIC_ARN"], Message='{"type": "JobSubmitted"}',
                                      MessageAttributes={"type": {"DataType": "String", "StringValue": "JobSubmitted"}})
        session.client("events").put_events(Entries=[{
            "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
            "Detail": json.dumps({"instance-id": "i-1", "instance-action": "terminate"})}])
        before = view(session, env)
        assert journal.records_written > 0

    assert len(before["items"]) == 3 and "gone-1" not in before["objects"] and len(before["objects"]) == 5
    assert sum(len(messages) for messages in before["queues"].values()) >= 5  # dead letter, 2 reports, SNS, EventBridge
    with local_aws(tmp_path, monkeypatch) as (session, env, journal):
        after = view(session, env)
        assert after == before
        # and the restored state is live: consumers can take the messages, writers go on
        received = session.client("sqs").receive_message(QueueUrl=json.loads(env["SPOTRUN_DLQ_URLS"])["reports"])
        assert [m["Body"] for m in received["Messages"]] == ["dead-1"]
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == {r["blob"] for r in journal.mirror["s3"].values()}


def test_a_torn_last_record_is_ignored_and_a_damaged_one_stops_the_start(tmp_path, monkeypatch):
    with local_aws(tmp_path, monkeypatch) as (session, env, _):
        session.client("s3").put_object(Bucket=env["SPOTRUN_BUCKET"], Key="kept", Body=b"kept")
    journal = tmp_path / "journal.jsonl"
    intact = journal.read_bytes()
    journal.write_bytes(intact + b'{"t":"s3","bucket":"x","ke')  # the process died in the write
    with local_aws(tmp_path, monkeypatch) as (session, env, _):
        assert session.client("s3").get_object(Bucket=env["SPOTRUN_BUCKET"], Key="kept")["Body"].read() == b"kept"

    journal.write_bytes(b"not json\n" + journal.read_bytes())
    with pytest.raises(JournalError, match=r"journal.jsonl, line 1: unreadable record"):
        StateJournal(tmp_path).load()


def test_a_blob_that_is_not_what_was_stored_stops_the_start(tmp_path, monkeypatch):
    with local_aws(tmp_path, monkeypatch) as (session, env, journal):
        session.client("s3").put_object(Bucket=env["SPOTRUN_BUCKET"], Key="checkpoint", Body=b"state")
        [record] = journal.mirror["s3"].values()
    (tmp_path / "blobs" / record["blob"]).write_bytes(b"STATE")
    damaged = r"s3://spotrun-data-us-east-1/checkpoint: its body .* is not what was stored"
    with pytest.raises(JournalError, match=damaged), local_aws(tmp_path, monkeypatch):
        pass


def test_the_journal_compacts_to_the_current_state(tmp_path, monkeypatch):
    with local_aws(tmp_path, monkeypatch, compact_after_bytes=20_000) as (session, env, journal):
        dynamodb = session.client("dynamodb")
        for beat in range(300):  # a heartbeat rewriting one task item
            dynamodb.put_item(TableName=env["SPOTRUN_TABLE"], Item={"pk": {"S": "JOB#1"}, "sk": {"S": "TASK#0"},
                                                                    "beat": {"N": str(beat)}})
        assert journal.compactions >= 2  # the start's, and at least one while running
        assert (tmp_path / "journal.jsonl").stat().st_size < 40_000 < journal.bytes_written
    with local_aws(tmp_path, monkeypatch) as (session, env, _):
        [item] = session.client("dynamodb").scan(TableName=env["SPOTRUN_TABLE"])["Items"]
        assert item["beat"] == {"N": "299"}


def test_a_journal_that_cannot_be_written_refuses_changes_instead_of_losing_them(tmp_path, monkeypatch):
    with local_aws(tmp_path, monkeypatch) as (session, env, journal):
        s3, dynamodb = session.client("s3"), session.client("dynamodb")
        s3.put_object(Bucket=env["SPOTRUN_BUCKET"], Key="before", Body=b"kept")
        writable, journal._fd = journal._fd, os.open(os.devnull, os.O_RDONLY)  # writes now fail, as on a failed disk
        with pytest.raises(ClientError) as refused:
            dynamodb.put_item(TableName=env["SPOTRUN_TABLE"], Item={"pk": {"S": "a"}, "sk": {"S": "b"}})
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=env["SPOTRUN_BUCKET"], Key="after", Body=b"lost?")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert s3.get_object(Bucket=env["SPOTRUN_BUCKET"], Key="before")["Body"].read() == b"kept"  # reads still work
        os.close(journal._fd)
        journal._fd = writable


def test_a_record_whose_resource_no_longer_exists_stops_the_start_by_name(tmp_path, monkeypatch):
    (tmp_path / "journal.jsonl").write_text(json.dumps({"t": "sqs", "queue": "spotrun-retired", "id": "m-1",
                                                        "message": {"body": "kept?"}}) + "\n")
    with pytest.raises(JournalError, match="cannot put back a sqs record of queue spotrun-retired"), \
            local_aws(tmp_path, monkeypatch):
        pass
