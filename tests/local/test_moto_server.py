"""The local runtime's moto server keeps DynamoDB's atomicity under concurrent requests.

moto's TransactWriteItems snapshots the table and puts the snapshot back when a condition fails,
which undid other threads' writes made meanwhile (found by the chaos soak: tasks stuck QUEUED with
their TaskLaunching event on the timeline, job counts off). The runtime serializes moto's DynamoDB
requests; here one thread keeps failing conditional transactions while others write."""

from __future__ import annotations

import threading

import boto3
from botocore.exceptions import ClientError

from spotrun_local.endpoint import moto_server


def test_failing_conditional_transactions_do_not_undo_concurrent_writes():
    server = moto_server()
    server.start()
    try:
        host, port = server.get_host_and_port()
        session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        client = session.client("dynamodb", endpoint_url=f"http://{host}:{port}")
        client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        client.put_item(TableName="t", Item={"pk": {"S": "guard"}, "v": {"N": "0"}})
        # some bulk, so that the snapshot takes a while
        for n in range(300):
            client.put_item(TableName="t", Item={"pk": {"S": f"bulk-{n}"}, "data": {"S": "x" * 200}})
        stop = threading.Event()
        errors: list[BaseException] = []

        def failing_transactions() -> None:
            own = session.client("dynamodb", endpoint_url=f"http://{host}:{port}")
            while not stop.is_set():
                try:
                    own.transact_write_items(TransactItems=[{"Update": {
                        "TableName": "t", "Key": {"pk": {"S": "guard"}}, "UpdateExpression": "SET v = :v",
                        "ConditionExpression": "v = :never",
                        "ExpressionAttributeValues": {":v": {"N": "1"}, ":never": {"N": "-1"}}}}])
                except ClientError as error:
                    if error.response["Error"]["Code"] != "TransactionCanceledException":
                        errors.append(error)

        def writer(k: int) -> None:
            own = session.client("dynamodb", endpoint_url=f"http://{host}:{port}")
            for n in range(60):
                own.put_item(TableName="t", Item={"pk": {"S": f"w{k}-{n}"}})

        spoilers = [threading.Thread(target=failing_transactions) for _ in range(2)]
        writers = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for thread in spoilers + writers:
            thread.start()
        for thread in writers:
            thread.join()
        stop.set()
        for thread in spoilers:
            thread.join()
        written = [f"w{k}-{n}" for k in range(3) for n in range(60)]
        missing = [key for key in written if "Item" not in client.get_item(TableName="t", Key={"pk": {"S": key}})]
        assert not missing, f"{len(missing)} of {len(written)} writes were undone"
        assert not errors
    finally:
        server.stop()
