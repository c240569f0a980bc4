"""Events shaped exactly as AWS delivers them, moto in this process, small test doubles, and waiting on real processes with real
clocks (the benchmarks under bench/ wait with it too)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest


def api_event(method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
              user: str = "arn:aws:iam::123456789012:user/alice") -> dict[str, Any]:
    """An API Gateway REST proxy event as IAM-authorized API Gateway sends it."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {}, "queryStringParameters": query, "multiValueQueryStringParameters":
            {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourceId": "abc", "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/prod{path}",
            "accountId": "123456789012", "stage": "prod", "requestId": str(uuid.uuid4()), "apiId": "abc",
            "protocol": "HTTP/1.1", "requestTimeEpoch": 0,
            "identity": {"userArn": user, "caller": "AIDAEXAMPLE", "accessKey": "AKIAEXAMPLE", "sourceIp": "127.0.0.1",
                         "accountId": "123456789012", "user": "AIDAEXAMPLE", "userAgent": "spotrun-cli"},
        },
        "body": None if body is None else (body if isinstance(body, str) else json.dumps(body)),
        "isBase64Encoded": False,
    }


def function_url_event(method: str, path: str, body: Any = None, signer: str | None = None,
                       base64_encoded: bool = False) -> dict[str, Any]:
    """A Lambda function URL event (payload format 2.0) as a URL with AuthType AWS_IAM delivers it: the SigV4
    signer in requestContext.authorizer.iam (`signer` None: no authorizer, as no signed call would come)."""
    context: dict[str, Any] = {
        "accountId": "123456789012", "apiId": "abcdefghijklmnopqrstuvwxyz123456", "domainName":
            "abcdefghijklmnopqrstuvwxyz123456.lambda-url.us-east-1.on.aws", "domainPrefix":
            "abcdefghijklmnopqrstuvwxyz123456",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.64.0.9",
                 "userAgent": "spotrun-worker"},
        "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default", "time": "05/Dec/2026:12:00:00 +0000",
        "timeEpoch": 0,
    }
    if signer is not None:
        context["authorizer"] = {"iam": {"accessKey": "ASIAEXAMPLE", "accountId": "123456789012",
                                         "callerId": "AROAEXAMPLE:i-0", "cognitoIdentity": None,
                                         "principalOrgId": None, "userArn": signer, "userId": "AROAEXAMPLE:i-0"}}
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": context["domainName"]},
        "requestContext": context, "isBase64Encoded": base64_encoded,
    }
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


def eventbridge_event(detail_type: str, detail: dict[str, Any], source: str = "aws.ec2",
                      at: datetime | None = None) -> dict[str, Any]:
    """An EventBridge event as the rule's SQS target receives it (the SQS body)."""
    instance = detail.get("instance-id")
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
        "account": "123456789012", "time": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}"] if instance else [],
        "detail": detail,
    }


@contextlib.contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in this process, reached with dummy credentials (set through `monkeypatch`; no endpoint, so
    nothing real can be reached): a boto3 session for us-east-1."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


class LambdaContextStub:
    function_name = "test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    memory_limit_in_mb = 512
    aws_request_id = "test"
    log_group_name = "/aws/lambda/test"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             explain: Callable[[], str] | None = None, *, every: float = 0.02) -> Any:
    """The first truthy value of `condition`, asked every `every` seconds for up to `timeout` seconds; a failed
    assertion naming `what` (and what `explain` says, asked only then) when it never comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {explain()}" if explain else ""))
