"""The request translators (`spotrun_local.iam_requests`) as tables: a request on the wire, the IAM questions
(action, resource, context) it raises. The requests are shaped as botocore sends them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from spotrun_local.iam_requests import HttpRequest, access_requests, caller, sts_call

REGION, ACCOUNT = "us-east-1", "123456789012"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


def environ(method: str, path: str = "/", query: str = "", body: bytes = b"", content_type: str = "",
            **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                           "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    if content_type:
        env["CONTENT_TYPE"] = content_type
    env.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return env


def dynamodb(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return environ("POST", body=json.dumps(body).encode(), content_type="application/x-amz-json-1.0",
                   x_amz_target=f"DynamoDB_20120810.{operation}")


LOG_GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/spotrun/tasks"


def logs(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return environ("POST", body=json.dumps(body).encode(), content_type="application/x-amz-json-1.1",
                   x_amz_target=f"Logs_20140328.{operation}")


def questions(service: str, env: dict[str, Any]) -> list[tuple[str, str, dict[str, list[str]]]]:
    found = access_requests(service, HttpRequest(env), region=REGION, account=ACCOUNT, partition_key="pk")
    assert all(request.unreadable is None for request in found), found
    return [(request.action, request.resource, {k: list(v) for k, v in request.context.items()}) for request in found]


def pk(value: str) -> dict[str, Any]:
    return {"pk": {"S": value}, "sk": {"S": "TASK"}}


def leading(*values: str) -> dict[str, list[str]]:
    return {"dynamodb:LeadingKeys": list(values)}


def item(value: str, *attributes: str, returns: str | None = None) -> dict[str, list[str]]:
    """A single-item request's context: its leading key, the attributes it names (sorted) and its ReturnValues."""
    return {**leading(value), "dynamodb:Attributes": sorted({"pk", "sk", *attributes}),
            **({"dynamodb:ReturnValues": [returns]} if returns else {})}


DYNAMODB = [
    ("GetItem", {"TableName": "t", "Key": pk("A")}, [("dynamodb:GetItem", TABLE, item("A"))]),
    ("GetItem with a projection", {"TableName": "t", "Key": pk("A"), "ProjectionExpression": "#s, desired.x[0]",
                                   "ExpressionAttributeNames": {"#s": "state"}},
     [("dynamodb:GetItem", TABLE, item("A", "state", "desired"))]),
    ("PutItem by table ARN", {"TableName": TABLE, "Item": {**pk("A"), "x": {"N": "1"}}},
     [("dynamodb:PutItem", TABLE, item("A", "x"))]),
    ("UpdateItem", {"TableName": "t", "Key": pk("A")}, [("dynamodb:UpdateItem", TABLE, item("A"))]),
    # The agent's beat (spotrun.adapters.dynamo.tasks.record_beat): the condition's names count here too.
    ("UpdateItem of a beat", {"TableName": "t", "Key": pk("A"), "UpdateExpression": "SET beat = :b",
                              "ConditionExpression": "attribute_exists(pk) AND (attribute_not_exists(beat) "
                                                     "OR beat.attempt <= :a)",
                              "ExpressionAttributeValues": {":b": {"M": {}}, ":a": {"N": "1"}}, "ReturnValues": "NONE"},
     [("dynamodb:UpdateItem", TABLE, item("A", "beat", returns="NONE"))]),
    ("UpdateItem naming more through placeholders",
     {"TableName": "t", "Key": pk("A"), "UpdateExpression": "SET #b = :b, #n1.#n2 = :v REMOVE x ADD y :one",
      "ConditionExpression": "size(#s) > :z AND #a IN (:a, :b)", "ReturnValues": "ALL_NEW",
      "ExpressionAttributeNames": {"#b": "beat", "#n1": "checkpoint", "#n2": "seq", "#s": "state", "#a": "attempt"}},
     [("dynamodb:UpdateItem", TABLE, item("A", "beat", "checkpoint", "x", "y", "state", "attempt",
                                          returns="ALL_NEW"))]),
    ("UpdateItem, the legacy parameters", {"TableName": "t", "Key": pk("A"), "AttributeUpdates": {"u": {}},
                                           "Expected": {"e": {"Exists": False}}},
     [("dynamodb:UpdateItem", TABLE, item("A", "u", "e"))]),
    ("DeleteItem", {"TableName": "t", "Key": pk("A")}, [("dynamodb:DeleteItem", TABLE, item("A"))]),
    ("Query", {"TableName": "t", "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
               "ExpressionAttributeValues": {":p": {"S": "A"}, ":s": {"S": "ATTEMPT#"}}},
     [("dynamodb:Query", TABLE, leading("A"))]),
    ("Query with a name placeholder", {"TableName": "t", "KeyConditionExpression": "#k = :p",
                                       "ExpressionAttributeNames": {"#k": "pk"},
                                       "ExpressionAttributeValues": {":p": {"S": "A"}}},
     [("dynamodb:Query", TABLE, leading("A"))]),
    ("Query, the legacy KeyConditions", {"TableName": "t", "KeyConditions": {
        "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "A"}]}}},
     [("dynamodb:Query", TABLE, leading("A"))]),
    ("Query on an index: every equality counts",
     {"TableName": "t", "IndexName": "by_state", "KeyConditionExpression": "state_sk = :s AND state_pk = :p",
      "ExpressionAttributeValues": {":p": {"S": "J#1"}, ":s": {"S": "Q"}}},
     [("dynamodb:Query", f"{TABLE}/index/by_state", leading("Q", "J#1"))]),
    ("BatchGetItem: per table", {"RequestItems": {"t": {"Keys": [pk("A"), pk("B")]}, "u": {"Keys": [pk("C")]}}},
     [("dynamodb:BatchGetItem", TABLE, leading("A", "B")),
      ("dynamodb:BatchGetItem", TABLE.replace("/t", "/u"), leading("C"))]),
    ("BatchWriteItem: puts and deletes", {"RequestItems": {"t": [{"PutRequest": {"Item": pk("A")}},
                                                                 {"DeleteRequest": {"Key": pk("B")}}]}},
     [("dynamodb:BatchWriteItem", TABLE, leading("A", "B"))]),
    ("TransactWriteItems: per entry, as its single-item action",
     {"TransactItems": [{"Put": {"TableName": "t", "Item": pk("A")}},
                        {"Update": {"TableName": "t", "Key": pk("B")}},
                        {"ConditionCheck": {"TableName": "t", "Key": pk("C")}},
                        {"Delete": {"TableName": "t", "Key": pk("D")}}]},
     [("dynamodb:PutItem", TABLE, item("A")), ("dynamodb:UpdateItem", TABLE, item("B")),
      ("dynamodb:ConditionCheckItem", TABLE, item("C")), ("dynamodb:DeleteItem", TABLE, item("D"))]),
    ("TransactGetItems", {"TransactItems": [{"Get": {"TableName": "t", "Key": pk("A")}}]},
     [("dynamodb:GetItem", TABLE, item("A"))]),
    ("Scan on an index: no leading keys", {"TableName": "t", "IndexName": "live"},
     [("dynamodb:Scan", f"{TABLE}/index/live", {})]),
    ("ListTables: on *", {}, [("dynamodb:ListTables", "*", {})]),
]


@pytest.mark.parametrize(("label", "body", "expected"), DYNAMODB, ids=[row[0] for row in DYNAMODB])
def test_dynamodb(label, body, expected):
    assert questions("dynamodb", dynamodb(label.split()[0].rstrip(":,"), body)) == expected


UNREADABLE = [
    ("a key without the partition key", "dynamodb", dynamodb("GetItem", {"TableName": "t", "Key": {"sk": {"S": "x"}}})),
    ("a key that is not a string", "dynamodb", dynamodb("GetItem", {"TableName": "t", "Key": {"pk": {"L": []}}})),
    ("a Query without a partition key equality", "dynamodb", dynamodb("Query", {
        "TableName": "t", "KeyConditionExpression": "sk = :s", "ExpressionAttributeValues": {":s": {"S": "x"}}})),
    ("an expression naming a placeholder it does not define", "dynamodb", dynamodb("UpdateItem", {
        "TableName": "t", "Key": pk("A"), "UpdateExpression": "SET #nope = :v"})),
    ("a body that is not JSON", "dynamodb", environ("POST", body=b"{", x_amz_target="DynamoDB_20120810.GetItem")),
    ("a body that is not an object", "dynamodb", environ("POST", body=b"[]",
                                                        x_amz_target="DynamoDB_20120810.GetItem")),
    ("a PutLogEvents without a stream", "logs", logs("PutLogEvents", {"logGroupName": "g", "logEvents": []})),
    ("a DeleteObjects without objects", "s3", environ("POST", "/b", "delete", body=b"<Delete></Delete>")),
    ("a DeleteObjects that is not XML", "s3", environ("POST", "/b", "delete", body=b"<Delete>")),
]


@pytest.mark.parametrize(("label", "service", "env"), UNREADABLE, ids=[row[0] for row in UNREADABLE])
def test_a_request_that_cannot_be_read_is_one_unreadable_question(label, service, env):
    (found,) = access_requests(service, HttpRequest(env), region=REGION, account=ACCOUNT)
    assert found.unreadable and found.resource == "*", found


OBJECT = "arn:aws:s3:::b/checkpoints/j-1/3/1.ckpt"
S3 = [
    ("GetObject", environ("GET", "/b/checkpoints/j-1/3/1.ckpt", "x-id=GetObject"), [("s3:GetObject", OBJECT, {})]),
    ("HeadObject", environ("HEAD", "/b/checkpoints/j-1/3/1.ckpt"), [("s3:GetObject", OBJECT, {})]),
    ("GetObject of a version", environ("GET", "/b/checkpoints/j-1/3/1.ckpt", "versionId=v1"),
     [("s3:GetObjectVersion", OBJECT, {})]),
    ("PutObject", environ("PUT", "/b/checkpoints/j-1/3/1.ckpt"), [("s3:PutObject", OBJECT, {})]),
    ("DeleteObject", environ("DELETE", "/b/checkpoints/j-1/3/1.ckpt"), [("s3:DeleteObject", OBJECT, {})]),
    ("CreateMultipartUpload", environ("POST", "/b/checkpoints/j-1/3/1.ckpt", "uploads"),
     [("s3:PutObject", OBJECT, {})]),
    ("UploadPart", environ("PUT", "/b/checkpoints/j-1/3/1.ckpt", "partNumber=1&uploadId=u"),
     [("s3:PutObject", OBJECT, {})]),
    ("CompleteMultipartUpload", environ("POST", "/b/checkpoints/j-1/3/1.ckpt", "uploadId=u"),
     [("s3:PutObject", OBJECT, {})]),
    ("ListParts", environ("GET", "/b/checkpoints/j-1/3/1.ckpt", "uploadId=u"),
     [("s3:ListMultipartUploadParts", OBJECT, {})]),
    ("AbortMultipartUpload", environ("DELETE", "/b/checkpoints/j-1/3/1.ckpt", "uploadId=u"),
     [("s3:AbortMultipartUpload", OBJECT, {})]),
    ("CopyObject: also reads its source", environ("PUT", "/b/outputs/x", x_amz_copy_source="/b/checkpoints/j-1/3/1.ckpt"),
     [("s3:PutObject", "arn:aws:s3:::b/outputs/x", {}), ("s3:GetObject", OBJECT, {})]),
    ("CopyObject from a version", environ("PUT", "/b/outputs/x",
                                          x_amz_copy_source="/b/checkpoints/j-1/3/1.ckpt?versionId=v1"),
     [("s3:PutObject", "arn:aws:s3:::b/outputs/x", {}), ("s3:GetObjectVersion", OBJECT, {})]),
    ("an unmapped subresource", environ("PUT", "/b/k", "tagging"), [("s3:Unmapped(PUT ?tagging)", "arn:aws:s3:::b/k",
                                                                     {})]),
    ("a presigned GET: its signing parameters select nothing",
     environ("GET", "/b/k", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F1%2Fus-east-1%2Fs3%2Faws4_request"
                            "&X-Amz-Signature=00&response-content-type=text%2Fplain"),
     [("s3:GetObject", "arn:aws:s3:::b/k", {})]),
    ("an encoded '?' in a key survives", {**environ("GET", "/b/a?b"), "RAW_URI": "/b/a%3Fb?x-id=GetObject"},
     [("s3:GetObject", "arn:aws:s3:::b/a?b", {})]),
    ("virtual-hosted", environ("GET", "/k/x", host="b.s3.localhost.localstack.cloud"),
     [("s3:GetObject", "arn:aws:s3:::b/k/x", {})]),
    ("ListObjectsV2 with a prefix", environ("GET", "/b", "list-type=2&prefix=checkpoints%2Fj-1%2F3%2F"),
     [("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": ["checkpoints/j-1/3/"]})]),
    ("ListObjects without a prefix", environ("GET", "/b"), [("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": [""]})]),
    ("ListObjectVersions", environ("GET", "/b", "versions&prefix=p"),
     [("s3:ListBucketVersions", "arn:aws:s3:::b", {"s3:prefix": ["p"]})]),
    ("HeadBucket", environ("HEAD", "/b"), [("s3:ListBucket", "arn:aws:s3:::b", {})]),
    ("ListMultipartUploads", environ("GET", "/b", "uploads"), [("s3:ListBucketMultipartUploads", "arn:aws:s3:::b",
                                                                {})]),
    ("GetBucketLocation", environ("GET", "/b", "location"), [("s3:GetBucketLocation", "arn:aws:s3:::b", {})]),
    ("an unmapped bucket subresource", environ("GET", "/b", "acl"), [("s3:Unmapped(GET ?acl)", "arn:aws:s3:::b", {})]),
    ("ListBuckets", environ("GET", "/"), [("s3:ListAllMyBuckets", "*", {})]),
    ("DeleteObjects: per key", environ("POST", "/b", "delete", body=(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>k1</Key></Object>'
        b"<Object><Key>k2</Key><VersionId>v</VersionId></Object></Delete>")),
     [("s3:DeleteObject", "arn:aws:s3:::b/k1", {}), ("s3:DeleteObjectVersion", "arn:aws:s3:::b/k2", {})]),
]


@pytest.mark.parametrize(("label", "env", "expected"), S3, ids=[row[0] for row in S3])
def test_s3(label, env, expected):
    assert questions("s3", env) == expected


QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:heartbeats"
URL = f"http://localhost/{ACCOUNT}/heartbeats"


def sqs_json(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return environ("POST", body=json.dumps(body).encode(), content_type="application/x-amz-json-1.0",
                   x_amz_target=f"AmazonSQS.{operation}")


OTHERS = [
    ("SendMessage (JSON)", "sqs", sqs_json("SendMessage", {"QueueUrl": URL, "MessageBody": "x"}),
     [("sqs:SendMessage", QUEUE, {})]),
    ("SendMessageBatch is SendMessage", "sqs", sqs_json("SendMessageBatch", {"QueueUrl": URL, "Entries": []}),
     [("sqs:SendMessage", QUEUE, {})]),
    ("DeleteMessageBatch is DeleteMessage", "sqs", sqs_json("DeleteMessageBatch", {"QueueUrl": URL}),
     [("sqs:DeleteMessage", QUEUE, {})]),
    ("GetQueueUrl by name", "sqs", sqs_json("GetQueueUrl", {"QueueName": "heartbeats"}),
     [("sqs:GetQueueUrl", QUEUE, {})]),
    ("ListQueues: on *", "sqs", sqs_json("ListQueues", {}), [("sqs:ListQueues", "*", {})]),
    ("SendMessage (query protocol, queue by path)", "sqs",
     environ("POST", f"/{ACCOUNT}/heartbeats", body=b"Action=SendMessage&MessageBody=x", content_type=FORM),
     [("sqs:SendMessage", QUEUE, {})]),
    ("TerminateInstances: per instance", "ec2",
     environ("POST", body=b"Action=TerminateInstances&InstanceId.1=i-1&InstanceId.2=i-2", content_type=FORM),
     [("ec2:TerminateInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1",
       {"aws:ARN": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"]}),
      ("ec2:TerminateInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-2",
       {"aws:ARN": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-2"]})]),
    ("DescribeInstances: on *", "ec2",
     environ("POST", body=b"Action=DescribeInstances&InstanceId.1=i-1", content_type=FORM),
     [("ec2:DescribeInstances", "*", {})]),
    ("AssumeRole with session tags", "sts",
     environ("POST", body=(b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Ftask&RoleSessionName=s"
                           b"&Tags.member.1.Key=job&Tags.member.1.Value=j-1"), content_type=FORM),
     [("sts:AssumeRole", "arn:aws:iam::1:role/task", {"aws:RequestTag/job": ["j-1"], "aws:TagKeys": ["job"]}),
      ("sts:TagSession", "arn:aws:iam::1:role/task", {"aws:RequestTag/job": ["j-1"], "aws:TagKeys": ["job"]})]),
    ("AssumeRole without tags needs no sts:TagSession", "sts",
     environ("POST", body=b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Ftask&RoleSessionName=s",
             content_type=FORM),
     [("sts:AssumeRole", "arn:aws:iam::1:role/task", {"aws:TagKeys": []})]),
    ("GetCallerIdentity needs no permission", "sts",
     environ("POST", body=b"Action=GetCallerIdentity", content_type=FORM), []),
    ("any other service: its operation on *", "sns",
     environ("POST", body=b"Action=Publish&TopicArn=t", content_type=FORM), [("sns:Publish", "*", {})]),
    ("any other JSON service", "kms", environ("POST", body=b"{}", x_amz_target="TrentService.Encrypt"),
     [("kms:Encrypt", "*", {})]),
    ("PutLogEvents: on its log stream", "logs", logs("PutLogEvents", {
        "logGroupName": "/spotrun/tasks", "logStreamName": "j-1/3/2", "logEvents": []}),
     [("logs:PutLogEvents", f"{LOG_GROUP}:log-stream:j-1/3/2", {})]),
    ("GetLogEvents by the group's ARN: on its log stream", "logs", logs("GetLogEvents", {
        "logGroupIdentifier": f"{LOG_GROUP}:*", "logStreamName": "j-1/3/2"}),
     [("logs:GetLogEvents", f"{LOG_GROUP}:log-stream:j-1/3/2", {})]),
    ("CreateLogStream: on its log group", "logs", logs("CreateLogStream", {
        "logGroupName": "/spotrun/tasks", "logStreamName": "j-1/3/2"}),
     [("logs:CreateLogStream", LOG_GROUP, {})]),
    ("DescribeLogGroups: on *", "logs", logs("DescribeLogGroups", {}), [("logs:DescribeLogGroups", "*", {})]),
]


@pytest.mark.parametrize(("label", "service", "env", "expected"), OTHERS, ids=[row[0] for row in OTHERS])
def test_sqs_ec2_sts_and_others(label, service, env, expected):
    assert questions(service, env) == expected


def test_an_assume_role_call_names_its_role_session_and_tags():
    call = sts_call(HttpRequest(environ("POST", body=(
        b"Action=AssumeRole&RoleArn=r&RoleSessionName=j-1.3.1&Tags.member.2.Key=task&Tags.member.2.Value=3"
        b"&Tags.member.1.Key=job&Tags.member.1.Value=j-1"), content_type=FORM)))
    assert (call.action, call.role_arn, call.session_name, call.tags) == (
        "AssumeRole", "r", "j-1.3.1", {"job": "j-1", "task": "3"})


def test_a_body_the_translator_read_is_handed_on_intact():
    body = json.dumps({"TableName": "t", "Key": pk("A")}).encode()
    env = dynamodb("GetItem", json.loads(body))
    questions("dynamodb", env)
    assert env["wsgi.input"].read() == body and env["CONTENT_LENGTH"] == str(len(body))


CALLERS = [
    ("SigV4 header", {"HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=AKIA1/20261205/us-east-1/dynamodb/"
                                            "aws4_request, SignedHeaders=host, Signature=00"}, ("AKIA1", "dynamodb")),
    ("presigned URL", {"QUERY_STRING": "X-Amz-Credential=AKIA1%2F20261205%2Fus-east-1%2Fs3%2Faws4_request"},
     ("AKIA1", "s3")),
    ("SigV2 header (S3)", {"HTTP_AUTHORIZATION": "AWS AKIA1:c2ln"}, ("AKIA1", "s3")),
    ("SigV2 presigned (S3)", {"QUERY_STRING": "AWSAccessKeyId=AKIA1&Signature=x&Expires=1"}, ("AKIA1", "s3")),
    ("unsigned", {}, None),
]


@pytest.mark.parametrize(("label", "env", "expected"), CALLERS, ids=[row[0] for row in CALLERS])
def test_the_caller_is_the_signing_key_and_service(label, env, expected):
    assert caller(env) == expected
