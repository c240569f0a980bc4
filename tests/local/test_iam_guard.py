"""The local IAM guard confines guarded sessions to their role's policy, as IAM would, and nobody else.

Real boto3 clients talk to moto's server wrapped in the guard; the sessions come from STS AssumeRole
with session tags (which moto itself drops). The evaluator and the WSGI layer are also tested alone.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from spotrun.access import task_policy
from spotrun_local.iam_guard import IamGuard, check_supported, evaluate

REGION, ACCOUNT = "us-east-1", "123456789012"
TABLE, BUCKET, QUEUE, OTHER_QUEUE = "guard-tasks", "guard-bucket", "guard-heartbeats", "guard-other"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
LOG_GROUP = "/guard/tasks"
LOG_GROUP_ARN = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/guard-task"
INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/guard-instance"
JOB, TASK = "${aws:PrincipalTag/job}", "${aws:PrincipalTag/task}"
OWN, OTHER = "checkpoints/j-1/3/", "checkpoints/j-1/4/"
TASK_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "ReadOwnTaskItems", "Effect": "Allow",
     "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"], "Resource": TABLE_ARN,
     "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": f"TASK#{JOB}#${{aws:PrincipalTag/task_key}}"},
                   "Null": {"dynamodb:LeadingKeys": "false"}}},
    {"Sid": "OwnCheckpoints", "Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"],
     "Resource": f"{BUCKET_ARN}/checkpoints/{JOB}/{TASK}/*"},
    {"Sid": "ListOwnCheckpoints", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": BUCKET_ARN,
     "Condition": {"StringLike": {"s3:prefix": f"checkpoints/{JOB}/{TASK}/*"}}},
    {"Sid": "Heartbeats", "Effect": "Allow", "Action": "sqs:SendMessage",
     "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}"},
    *(statement for statement in task_policy(table_arn=TABLE_ARN, bucket_arn=BUCKET_ARN, queue_arns=[],
                                             log_group_arn=LOG_GROUP_ARN)["Statement"]
      if statement["Sid"] in ("WriteOwnLogStreams", "WriteOwnBeat")),  # the deployed statements themselves
]}
INSTANCE_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
     "Condition": {"StringEquals": {"aws:ResourceTag/spotrun:managed": "true", "aws:ARN": "${ec2:SourceInstanceARN}"}}},
]}
TAGS = [{"Key": "job", "Value": "j-1"}, {"Key": "task_key", "Value": "000003"}, {"Key": "task", "Value": "3"}]


def guarded_moto_server(guard: IamGuard) -> Any:
    """moto's server as the runtime builds it (spotrun_local.endpoint.moto_server), behind the guard."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = guard.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server(ip_address="127.0.0.1", port=0, verbose=False)


@dataclass
class Stack:
    guard: IamGuard
    url: str
    admin: boto3.session.Session
    worker: boto3.session.Session  # the task role's session of task 3 of job j-1
    instance_tags: dict[str, dict[str, str]]

    def client(self, service: str, session: boto3.session.Session | None = None) -> Any:
        return (session or self.admin).client(service, endpoint_url=self.url)

    def assume(self, tags: list[dict[str, str]] | None = None) -> boto3.session.Session:
        extra = {"Tags": tags} if tags else {}
        assumed = self.client("sts").assume_role(RoleArn=TASK_ROLE, RoleSessionName="j-1.3.1", **extra)
        credentials = assumed["Credentials"]
        return boto3.session.Session(region_name=REGION, aws_access_key_id=credentials["AccessKeyId"],
                                     aws_secret_access_key=credentials["SecretAccessKey"],
                                     aws_session_token=credentials["SessionToken"])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    instance_tags: dict[str, dict[str, str]] = {}
    guard = IamGuard({TASK_ROLE: TASK_POLICY, INSTANCE_ROLE: INSTANCE_POLICY}, region=REGION, account=ACCOUNT,
                     resource_tags=lambda arn: instance_tags.get(arn, {}))
    server = guarded_moto_server(guard)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
        admin = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        stack = Stack(guard, url, admin, admin, instance_tags)
        stack.client("iam").create_role(RoleName="guard-task", AssumeRolePolicyDocument="{}")
        dynamodb = stack.client("dynamodb")
        dynamodb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                         {"AttributeName": "sk", "KeyType": "RANGE"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                    {"AttributeName": "sk", "AttributeType": "S"}])
        for pk in ("TASK#j-1#000003", "TASK#j-1#000004"):
            dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "sk": {"S": "TASK"}})
        s3 = stack.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for key in (f"{OWN}1.ckpt", f"{OTHER}1.ckpt"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"state")
        for name in (QUEUE, OTHER_QUEUE):
            stack.client("sqs").create_queue(QueueName=name)
        logs = stack.client("logs")
        logs.create_log_group(logGroupName=LOG_GROUP)
        for stream in ("j-1/3/1", "j-1/4/1", "j-1/31/1"):
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        stack.worker = stack.assume(TAGS)
        yield stack
    finally:
        server.stop()


def error_code(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)
    return str(raised.value.response["Error"]["Code"])


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "TASK"}}


def test_a_task_reads_its_own_items_only(stack: Stack) -> None:
    dynamodb = stack.client("dynamodb", stack.worker)
    assert dynamodb.get_item(TableName=TABLE, Key=key("TASK#j-1#000003"))["Item"]["pk"]["S"] == "TASK#j-1#000003"
    own = dynamodb.query(TableName=TABLE, KeyConditionExpression="#p = :p",
                         ExpressionAttributeNames={"#p": "pk"},
                         ExpressionAttributeValues={":p": {"S": "TASK#j-1#000003"}})
    assert own["Count"] == 1
    assert error_code(dynamodb.get_item, TableName=TABLE, Key=key("TASK#j-1#000004")) == "AccessDeniedException"
    assert error_code(dynamodb.query, TableName=TABLE, KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                      ExpressionAttributeValues={":p": {"S": "TASK#j-1#000004"}, ":s": {"S": "T"}}) \
        == "AccessDeniedException"
    own_only = dynamodb.batch_get_item(RequestItems={TABLE: {"Keys": [key("TASK#j-1#000003")]}})
    assert len(own_only["Responses"][TABLE]) == 1
    mixed = {TABLE: {"Keys": [key("TASK#j-1#000003"), key("TASK#j-1#000004")]}}
    assert error_code(dynamodb.batch_get_item, RequestItems=mixed) == "AccessDeniedException"
    assert error_code(dynamodb.put_item, TableName=TABLE, Item=key("TASK#j-1#000003")) == "AccessDeniedException"
    assert error_code(dynamodb.scan, TableName=TABLE) == "AccessDeniedException"  # no LeadingKeys: Null refuses


def test_a_task_writes_its_own_beat_and_nothing_else(stack: Stack) -> None:
    """spotrun.access's WriteOwnBeat: one UpdateItem of its own task's `beat`, as the agent's store makes it."""
    from datetime import UTC, datetime

    from spotrun.adapters.dynamo import DynamoStore

    dynamodb = stack.client("dynamodb", stack.worker)
    at = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert DynamoStore(dynamodb, TABLE).record_beat("j-1", 3, 1, at, 0.5)
    stored = stack.client("dynamodb").get_item(TableName=TABLE, Key=key("TASK#j-1#000003"))["Item"]
    assert stored["beat"]["M"]["attempt"] == {"N": "1"} and stored["beat"]["M"]["progress"] == {"N": "0.5"}
    # Another task's beat: refused.
    assert error_code(DynamoStore(dynamodb, TABLE).record_beat, "j-1", 4, 1, at) == "AccessDeniedException"

    def update(expression: str, values: dict[str, Any], **more: Any) -> str:
        return error_code(dynamodb.update_item, TableName=TABLE, Key=key("TASK#j-1#000003"),
                          UpdateExpression=expression, ExpressionAttributeValues=values, **more)

    beat = {":b": {"M": {"attempt": {"N": "1"}}}}
    # Any other attribute of its own item, named directly, through a placeholder, beside the beat, or in the
    # condition (the stricter reading of dynamodb:Attributes, which the guard applies): refused.
    assert update("SET #s = :s", {":s": {"S": "SUCCEEDED"}}, ExpressionAttributeNames={"#s": "state"}) \
        == "AccessDeniedException"
    assert update("SET beat = :b, attempt = :a", {**beat, ":a": {"N": "9"}}) == "AccessDeniedException"
    assert update("REMOVE desired", {":unused": {"N": "1"}}) == "AccessDeniedException"
    assert update("SET beat = :b", {**beat, ":r": {"S": "RUNNING"}}, ConditionExpression="#s = :r",
                  ExpressionAttributeNames={"#s": "state"}) == "AccessDeniedException"
    # Nor may the answer carry the item (its own item reads through GetItem anyway: the rule is plain NONE).
    assert update("SET beat = :b", beat, ReturnValues="ALL_NEW") == "AccessDeniedException"
    assert not [d for d in stack.guard.denials if d.action == "dynamodb:UpdateItem"
                and d.resource != TABLE_ARN]  # every refusal was about this table


def test_a_task_uses_its_own_checkpoints_only(stack: Stack) -> None:
    s3 = stack.client("s3", stack.worker)
    s3.put_object(Bucket=BUCKET, Key=f"{OWN}2.ckpt", Body=b"two")
    assert s3.get_object(Bucket=BUCKET, Key=f"{OWN}2.ckpt")["Body"].read() == b"two"
    assert s3.head_object(Bucket=BUCKET, Key=f"{OWN}2.ckpt")["ContentLength"] == 3
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=OWN)["Contents"]
    assert {item["Key"] for item in listed} >= {f"{OWN}1.ckpt", f"{OWN}2.ckpt"}
    body = bytes(range(256)) * (11 * 4096)  # 11 MiB: three parts of at most 5 MiB
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(body), BUCKET, f"{OWN}big.ckpt", Config=config)
    downloaded = io.BytesIO()
    s3.download_fileobj(BUCKET, f"{OWN}big.ckpt", downloaded)
    assert downloaded.getvalue() == body
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{OWN}aborted.ckpt")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=f"{OWN}aborted.ckpt", UploadId=upload, PartNumber=1, Body=b"part")
    assert len(s3.list_parts(Bucket=BUCKET, Key=f"{OWN}aborted.ckpt", UploadId=upload)["Parts"]) == 1
    s3.abort_multipart_upload(Bucket=BUCKET, Key=f"{OWN}aborted.ckpt", UploadId=upload)
    s3.delete_object(Bucket=BUCKET, Key=f"{OWN}2.ckpt")
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"{OWN}big.ckpt"}]})

    assert error_code(s3.put_object, Bucket=BUCKET, Key=f"{OTHER}2.ckpt", Body=b"x" * 70_000) == "AccessDenied"
    assert error_code(s3.get_object, Bucket=BUCKET, Key=f"{OTHER}1.ckpt") == "AccessDenied"
    assert error_code(s3.head_object, Bucket=BUCKET, Key=f"{OTHER}1.ckpt") == "403"
    assert error_code(s3.list_objects_v2, Bucket=BUCKET, Prefix=OTHER) == "AccessDenied"
    assert error_code(s3.list_objects_v2, Bucket=BUCKET) == "AccessDenied"
    assert error_code(s3.create_multipart_upload, Bucket=BUCKET, Key=f"{OTHER}big.ckpt") == "AccessDenied"
    assert error_code(s3.copy_object, Bucket=BUCKET, Key=f"{OWN}stolen.ckpt",
                      CopySource={"Bucket": BUCKET, "Key": f"{OTHER}1.ckpt"}) == "AccessDenied"
    objects = [{"Key": f"{OWN}1.ckpt"}, {"Key": f"{OTHER}1.ckpt"}]
    assert error_code(s3.delete_objects, Bucket=BUCKET, Delete={"Objects": objects}) == "AccessDenied"
    admin = stack.client("s3")
    assert admin.get_object(Bucket=BUCKET, Key=f"{OWN}1.ckpt")["Body"].read() == b"state"  # nothing was deleted
    assert admin.get_object(Bucket=BUCKET, Key=f"{OTHER}1.ckpt")["Body"].read() == b"state"


def test_presigned_urls_are_guarded_by_their_signer(stack: Stack) -> None:
    s3 = stack.client("s3", stack.worker)
    own = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": f"{OWN}1.ckpt"})
    with urllib.request.urlopen(own) as response:
        assert response.read() == b"state"
    other = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": f"{OTHER}1.ckpt"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(other)
    assert refused.value.code == 403


def test_a_task_sends_to_its_queue_only(stack: Stack) -> None:
    sqs, admin = stack.client("sqs", stack.worker), stack.client("sqs")
    own, other = (admin.get_queue_url(QueueName=name)["QueueUrl"] for name in (QUEUE, OTHER_QUEUE))
    sqs.send_message(QueueUrl=own, MessageBody="beat")
    sqs.send_message_batch(QueueUrl=own, Entries=[{"Id": "1", "MessageBody": "beat"}])
    assert error_code(sqs.send_message, QueueUrl=other, MessageBody="beat") == "AccessDenied"
    assert error_code(sqs.receive_message, QueueUrl=own) == "AccessDenied"


def test_a_task_writes_its_own_log_streams_only(stack: Stack) -> None:
    logs = stack.client("logs", stack.worker)
    event = [{"timestamp": 1_800_000_000_000, "message": "hello"}]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="j-1/3/1", logEvents=event)
    for stream in ("j-1/4/1", "j-1/31/1"):  # another task's, and one whose index merely starts the same
        assert error_code(logs.put_log_events, logGroupName=LOG_GROUP, logStreamName=stream,
                          logEvents=event) == "AccessDeniedException"
    assert error_code(logs.create_log_stream, logGroupName=LOG_GROUP, logStreamName="j-1/3/9") == "AccessDeniedException"
    assert error_code(logs.get_log_events, logGroupName=LOG_GROUP, logStreamName="j-1/4/1") == "AccessDeniedException"
    assert error_code(logs.delete_log_stream, logGroupName=LOG_GROUP, logStreamName="j-1/3/1") == "AccessDeniedException"


def test_sts_and_other_services(stack: Stack) -> None:
    sts = stack.client("sts", stack.worker)
    assert ":assumed-role/guard-task/j-1.3.1" in sts.get_caller_identity()["Arn"]
    assert error_code(sts.assume_role, RoleArn=TASK_ROLE, RoleSessionName="escape") == "AccessDenied"
    assert error_code(stack.client("iam", stack.worker).list_roles) == "AccessDenied"
    assert error_code(stack.client("ec2", stack.worker).describe_instances) == "UnauthorizedOperation"


def test_an_instance_ends_its_own_instance_only(stack: Stack) -> None:
    ec2 = stack.client("ec2")
    own, other = (instance["InstanceId"] for instance in  # one of moto's built-in images
                  ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)["Instances"])
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/"
    stack.instance_tags.update({arn + own: {"spotrun:managed": "true"}, arn + other: {"spotrun:managed": "true"}})
    stack.guard.register("ASIAGUARDINSTANCE001", INSTANCE_ROLE, "i-own", source_instance_arn=arn + own)
    agent = boto3.session.Session(region_name=REGION, aws_access_key_id="ASIAGUARDINSTANCE001",
                                  aws_secret_access_key="x").client("ec2", endpoint_url=stack.url)
    assert error_code(agent.terminate_instances, InstanceIds=[other]) == "UnauthorizedOperation"
    assert error_code(agent.terminate_instances, InstanceIds=[own, other]) == "UnauthorizedOperation"
    assert agent.terminate_instances(InstanceIds=[own])["TerminatingInstances"][0]["InstanceId"] == own
    stack.instance_tags[arn + other] = {}
    stack.guard.register("ASIAGUARDINSTANCE002", INSTANCE_ROLE, "i-other", source_instance_arn=arn + other)
    other_agent = boto3.session.Session(region_name=REGION, aws_access_key_id="ASIAGUARDINSTANCE002",
                                        aws_secret_access_key="x").client("ec2", endpoint_url=stack.url)
    assert error_code(other_agent.terminate_instances, InstanceIds=[other]) == "UnauthorizedOperation"  # unmanaged


def test_a_session_without_tags_matches_no_variable(stack: Stack) -> None:
    untagged = stack.assume()
    dynamodb, s3 = stack.client("dynamodb", untagged), stack.client("s3", untagged)
    for pk in ("TASK##", "TASK#${aws:PrincipalTag/job}#${aws:PrincipalTag/task_key}"):
        assert error_code(dynamodb.get_item, TableName=TABLE, Key=key(pk)) == "AccessDeniedException"
    for prefix in ("checkpoints///", "checkpoints/${aws:PrincipalTag/job}/${aws:PrincipalTag/task}/"):
        assert error_code(s3.put_object, Bucket=BUCKET, Key=f"{prefix}x", Body=b"x") == "AccessDenied"
        assert error_code(s3.list_objects_v2, Bucket=BUCKET, Prefix=prefix) == "AccessDenied"


def test_unguarded_callers_are_never_refused_and_refusals_are_recorded(stack: Stack) -> None:
    before = len(stack.guard.denials)
    dynamodb, s3, sqs = stack.client("dynamodb"), stack.client("s3"), stack.client("sqs")
    dynamodb.put_item(TableName=TABLE, Item=key("TASK#j-1#000004"))
    assert dynamodb.scan(TableName=TABLE)["Count"] >= 2
    s3.put_object(Bucket=BUCKET, Key=f"{OTHER}2.ckpt", Body=b"x")
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] >= 2
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=OTHER_QUEUE)["QueueUrl"], MessageBody="x")
    assert len(stack.guard.denials) == before

    worker = stack.client("dynamodb", stack.worker)
    with pytest.raises(ClientError) as refused:
        worker.get_item(TableName=TABLE, Key=key("TASK#j-1#000004"))
    principal = f"arn:aws:sts::{ACCOUNT}:assumed-role/guard-task/j-1.3.1"
    message = refused.value.response["Error"]["Message"]
    assert principal in message and "dynamodb:GetItem" in message and TABLE_ARN in message
    denial = stack.guard.denials[-1]
    assert (denial.principal_arn, denial.action, denial.resource) == (principal, "dynamodb:GetItem", TABLE_ARN)
    assert "no identity-based policy allows" in denial.reason
    assert stack.guard.session(stack.worker.get_credentials().access_key).tags == {  # type: ignore[union-attr]
        "job": "j-1", "task_key": "000003", "task": "3"}


# --- the WSGI layer alone ----------------------------------------------------------------------

def call(guard: IamGuard, environ: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Runs one request through the guard in front of an app that records what reached it."""
    reached: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        reached.append({**environ, "body": environ["wsgi.input"].read(length)})
        start_response("200 OK", [])
        return [b""]

    statuses: list[str] = []
    b"".join(guard.wrap(app)(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0], reached


def request(service: str, access_key: str = "ASIAWORKER", method: str = "GET", path: str = "/", body: bytes = b"",
            **extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "RAW_URI": path, "QUERY_STRING": "",
            "HTTP_HOST": "127.0.0.1:5000", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={access_key}/20260101/{REGION}/{service}/aws4_request, "
                                  "SignedHeaders=host, Signature=0", **extra}


@pytest.fixture
def guard() -> IamGuard:
    guard = IamGuard({TASK_ROLE: TASK_POLICY}, region=REGION, account=ACCOUNT)
    guard.register("ASIAWORKER", TASK_ROLE, "j-1.3.1", {"job": "j-1", "task": "3", "task_key": "000003"})
    return guard


def test_virtual_hosted_s3_requests_are_guarded(guard: IamGuard) -> None:
    host = {"HTTP_HOST": f"{BUCKET}.localhost:5000"}
    assert call(guard, request("s3", path=f"/{OWN}a%20b", **host))[0] == "200 OK"
    status, reached = call(guard, request("s3", path=f"/{OTHER}a", **host))
    assert status.startswith("403") and not reached
    assert guard.denials[-1].resource == f"{BUCKET_ARN}/{OTHER}a"


def test_query_protocol_bodies_reach_moto_intact(guard: IamGuard) -> None:
    queue_url = f"http://127.0.0.1:5000/{ACCOUNT}/{QUEUE}"
    body = f"Action=SendMessage&QueueUrl={queue_url}&MessageBody=caf%C3%A9".encode()
    form = {"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8"}
    status, reached = call(guard, request("sqs", method="POST", body=body, **form))
    assert status == "200 OK" and reached[0]["body"] == body and reached[0]["CONTENT_LENGTH"] == str(len(body))
    other = body.replace(QUEUE.encode(), OTHER_QUEUE.encode())
    status, reached = call(guard, request("sqs", method="POST", body=other, **form))
    assert status.startswith("403") and not reached


def test_other_callers_pass_untouched(guard: IamGuard) -> None:
    for environ in (request("dynamodb", access_key="AKIAADMIN", method="POST", body=b"{}"),
                    {**request("s3", body=b"x"), "HTTP_AUTHORIZATION": ""}):  # unsigned
        stream = environ["wsgi.input"]
        status, reached = call(guard, environ)
        assert status == "200 OK" and reached[0]["wsgi.input"] is stream  # the body was not even read


def test_guarded_roles_are_assumed_through_assume_role_only(guard: IamGuard) -> None:
    body = f"Action=AssumeRoleWithWebIdentity&RoleArn={TASK_ROLE}&RoleSessionName=x&WebIdentityToken=t".encode()
    unsigned = {**request("sts", method="POST", body=body, CONTENT_TYPE="application/x-www-form-urlencoded"),
                "HTTP_AUTHORIZATION": ""}
    status, reached = call(guard, unsigned)
    assert status.startswith("403") and not reached
    other_role = body.replace(TASK_ROLE.encode(), b"arn:aws:iam::123456789012:role/unguarded")
    assert call(guard, {**unsigned, "wsgi.input": io.BytesIO(other_role), "CONTENT_LENGTH": str(len(other_role))})[1]


def test_an_index_query_is_keyed_by_its_equalities() -> None:
    index_policy = policy({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{TABLE_ARN}/index/by_job",
                           "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": f"JOB#{JOB}"},
                                         "Null": {"dynamodb:LeadingKeys": "false"}}})
    guard = IamGuard({TASK_ROLE: index_policy}, region=REGION, account=ACCOUNT)
    guard.register("ASIAWORKER", TASK_ROLE, "j-1.3.1", {"job": "j-1"})
    target = {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Query"}
    for job, expected in (("j-1", "200 OK"), ("j-2", "400 Bad Request")):
        body = {"TableName": TABLE, "IndexName": "by_job", "KeyConditionExpression": "#j = :j AND job_sk > :s",
                "ExpressionAttributeNames": {"#j": "job_pk"},
                "ExpressionAttributeValues": {":j": {"S": f"JOB#{job}"}, ":s": {"S": "0"}}}
        assert call(guard, request("dynamodb", method="POST", body=json.dumps(body).encode(), **target))[0] == expected
    body["KeyConditionExpression"] = "job_sk = :s AND #j = :j"  # a sort key equality first hides nothing
    body["ExpressionAttributeValues"] = {":j": {"S": "JOB#j-2"}, ":s": {"S": "JOB#j-1"}}
    assert call(guard, request("dynamodb", method="POST", body=json.dumps(body).encode(), **target))[0] != "200 OK"


def test_unreadable_requests_of_guarded_sessions_are_refused(guard: IamGuard) -> None:
    target = {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem"}
    status, reached = call(guard, request("dynamodb", method="POST", body=b"{not json", **target))
    assert status.startswith("400") and not reached
    assert "could not read" in guard.denials[-1].reason
    body = b'{"TableName": "guard-tasks", "Key": {"id": {"S": "TASK#j-1#000003"}}}'  # not keyed on pk
    assert call(guard, request("dynamodb", method="POST", body=body, **target))[0].startswith("400")


# --- the evaluator -----------------------------------------------------------------------------

def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_an_explicit_deny_overrides_any_allow() -> None:
    document = policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                      {"Sid": "NoSecrets", "Effect": "Deny", "Action": "s3:Get*",
                       "Resource": "arn:aws:s3:::b/secret/*"})
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b/public/x").allowed
    refused = evaluate(document, "S3:getobject", "arn:aws:s3:::b/secret/x")
    assert not refused.allowed and "explicit deny" in refused.reason and "NoSecrets" in refused.reason
    assert not evaluate(document, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q").allowed  # implicit deny


def test_string_like_globs_and_literal_variable_values() -> None:
    document = policy({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
                       "Condition": {"StringLike": {"s3:prefix": ["jobs/${aws:PrincipalTag/job}/?/*"]}}})
    context = {"aws:PrincipalTag/job": "j-1"}
    assert evaluate(document, "s3:ListBucket", "arn:aws:s3:::b", {**context, "s3:prefix": "jobs/j-1/3/x"}).allowed
    assert not evaluate(document, "s3:ListBucket", "arn:aws:s3:::b", {**context, "s3:prefix": "jobs/j-1/33/x"}).allowed
    assert not evaluate(document, "s3:ListBucket", "arn:aws:s3:::b", {**context, "s3:prefix": "jobs/j-2/3/x"}).allowed
    assert not evaluate(document, "s3:ListBucket", "arn:aws:s3:::b", context).allowed  # no s3:prefix at all
    wildcard_tag = {"aws:PrincipalTag/job": "*", "s3:prefix": "jobs/j-2/3/x"}  # a tag value is no wildcard
    assert not evaluate(document, "s3:ListBucket", "arn:aws:s3:::b", wildcard_tag).allowed


def test_for_all_values_holds_for_an_empty_set_unless_null_forbids_it() -> None:
    condition = {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["A", "B"]}}
    loose = policy({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*", "Condition": condition})
    strict = policy({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*",
                     "Condition": {**condition, "Null": {"dynamodb:LeadingKeys": False}}})
    assert evaluate(loose, "dynamodb:Scan", "t").allowed  # IAM's semantics: vacuously true
    assert not evaluate(strict, "dynamodb:Scan", "t").allowed
    assert evaluate(strict, "dynamodb:Query", "t", {"dynamodb:LeadingKeys": ["A", "B"]}).allowed
    assert not evaluate(strict, "dynamodb:Query", "t", {"dynamodb:LeadingKeys": ["A", "C"]}).allowed
    any_value = policy({"Effect": "Allow", "Action": "*", "Resource": "*",
                        "Condition": {"ForAnyValue:StringLike": {"k": "x*"}}})
    assert evaluate(any_value, "a:b", "r", {"k": ["y", "xy"]}).allowed
    assert not evaluate(any_value, "a:b", "r").allowed


def test_an_unknown_variable_never_matches() -> None:
    in_resource = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/${aws:username}/*"})
    assert not evaluate(in_resource, "s3:GetObject", "arn:aws:s3:::b/${aws:username}/x").allowed
    assert not evaluate(in_resource, "s3:GetObject", "arn:aws:s3:::b//x").allowed
    in_condition = policy({"Effect": "Allow", "Action": "*", "Resource": "*",
                           "Condition": {"StringNotEquals": {"k": "${aws:PrincipalTag/missing}"}}})
    assert not evaluate(in_condition, "a:b", "r", {"k": "anything"}).allowed
    excluded = policy({"Effect": "Allow", "Action": "*", "NotResource": "arn:x:${aws:PrincipalTag/missing}"})
    assert not evaluate(excluded, "a:b", "arn:y").allowed
    denied = policy({"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "*", "NotResource": "arn:x:${aws:PrincipalTag/missing}"})
    assert not evaluate(denied, "a:b", "arn:x:y").allowed  # nor does it narrow a Deny


def test_other_operators_and_unsupported_ones() -> None:
    document = policy({"Effect": "Allow", "Action": "*", "Resource": "*",
                       "Condition": {"StringNotEquals": {"aws:PrincipalTag/kind": "combine"},
                                     "StringEqualsIfExists": {"aws:PrincipalTag/team": "a"}}})
    assert evaluate(document, "a:b", "r").allowed  # a Not... operator holds against a missing key
    assert not evaluate(document, "a:b", "r", {"aws:principaltag/KIND": "combine"}).allowed  # keys ignore case
    assert not evaluate(document, "a:b", "r", {"aws:PrincipalTag/team": "b"}).allowed
    with pytest.raises(ValueError, match="NumericLessThan"):
        IamGuard({TASK_ROLE: policy({"Effect": "Allow", "Action": "*", "Resource": "*",
                                     "Condition": {"NumericLessThan": {"k": "1"}}})}, region=REGION, account=ACCOUNT)


def test_the_deployed_task_policy_is_supported() -> None:
    check_supported(task_policy(table_arn=TABLE_ARN, bucket_arn=BUCKET_ARN, queue_arns=["arn:aws:sqs:x:1:q"],
                                log_group_arn=LOG_GROUP_ARN))
