"""The local worker-api function URL: SigV4 for `lambda`, IAM's two questions answered by the guard from the
instance role's policy, and the payload format 2.0 event the worker-api handler reads its caller from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spotrun.access import instance_policy, worker_routes_statements
from spotrun.domain.messages import AttemptRef
from spotrun.handlers.worker_api import caller_instance
from spotrun_local.function_url import function_url
from spotrun_local.gateway import LocalCredentials
from spotrun_local.iam_guard import IamGuard
from spotrun_worker.routes import HttpRoutes, RouteError

ACCOUNT, REGION = "000000000000", "us-east-1"
WORKER_API = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:spotrun-worker-api"
INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/spotrun-instance"
PLAIN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/plain-invoker"  # may Invoke the function directly, not its URL
INSTANCE_ID = "i-0123456789abcdef0"
KEYS = {"ASIAINSTANCE00000001": (INSTANCE_ROLE, INSTANCE_ID), "ASIAPLAININVOKER0001": (PLAIN_ROLE, INSTANCE_ID)}


def _instance_document() -> dict[str, Any]:
    document = instance_policy(instances_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
                               managed_tag=("spotrun:managed", "true"))
    document["Statement"] += worker_routes_statements(WORKER_API)
    return document


@pytest.fixture
def served() -> Iterator[tuple[Any, IamGuard, list[dict[str, Any]]]]:
    plain = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": WORKER_API}]}
    guard = IamGuard({INSTANCE_ROLE: _instance_document(), PLAIN_ROLE: plain}, region=REGION, account=ACCOUNT)
    principals: dict[str, tuple[LocalCredentials, str]] = {}
    for key, (role, session) in KEYS.items():
        guard.register(key, role, session)
        principals[key] = (LocalCredentials(key, f"secret-of-{key}"),
                           f"arn:aws:sts::{ACCOUNT}:assumed-role/{role.rsplit('/', 1)[-1]}/{session}")
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"claimed": true}'}

    url = function_url(handler, principals.get, lambda key: (lambda d: d and d.reason)(
        guard.function_url_denial(key, WORKER_API)))
    try:
        yield url, guard, events
    finally:
        url.stop()


def _session(key: str) -> Any:
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=f"secret-of-{key}", region_name=REGION)


def test_the_agent_calls_the_url_and_the_handler_gets_the_signer_from_lambdas_authorizer(served) -> None:
    url, guard, events = served
    routes = HttpRoutes(url.url + "/", _session("ASIAINSTANCE00000001"), REGION)  # a function URL ends with /
    routes.claim(AttemptRef(job_id="j-1", index=0, attempt=3, instance_id=INSTANCE_ID))
    [event] = events
    assert event["version"] == "2.0" and event["rawPath"] == "/worker/claim"
    assert event["requestContext"]["http"]["method"] == "POST" and json.loads(event["body"]) == {"attempt": 3}
    assert event["requestContext"]["authorizer"]["iam"]["userArn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/spotrun-instance/{INSTANCE_ID}")
    assert "identity" not in event["requestContext"] and "httpMethod" not in event  # not API Gateway's REST shape
    assert caller_instance(event, "spotrun-instance") == INSTANCE_ID
    assert guard.denials == []


def _signed_post(url: str, key: str, service: str) -> requests.Response:
    target = f"{url}/worker/claim"
    request = AWSRequest(method="POST", url=target, data=b'{"attempt": 1}', headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, f"secret-of-{key}"), service, REGION).add_auth(request)
    return requests.post(target, data=b'{"attempt": 1}', headers=dict(request.headers.items()), timeout=5)


def test_a_signature_for_another_service_or_none_is_refused_before_the_function(served) -> None:
    url, _, events = served
    answer = _signed_post(url.url, "ASIAINSTANCE00000001", "execute-api")
    assert answer.status_code == 403 and "not 'lambda'" in answer.json()["message"]
    unsigned = requests.post(f"{url.url}/worker/claim", json={"attempt": 1}, timeout=5)
    assert unsigned.status_code == 403 and "SigV4 (service lambda)" in unsigned.json()["message"]
    page = requests.get(f"{url.url}/", timeout=5)  # no console page on a function URL: it is the function's
    assert page.status_code == 403
    assert events == []
    assert _signed_post(url.url, "ASIAINSTANCE00000001", "lambda").status_code == 200


def test_a_role_without_the_url_grant_is_refused_even_with_invoke_function(served) -> None:
    url, guard, events = served
    with pytest.raises(RouteError) as refused:
        HttpRoutes(url.url, _session("ASIAPLAININVOKER0001"), REGION, sleep=lambda _: None).claim(
            AttemptRef(job_id="j-1", index=0, attempt=3, instance_id=INSTANCE_ID))
    assert refused.value.status == 403
    assert [(d.action, d.resource) for d in guard.denials] == [("lambda:InvokeFunctionUrl", WORKER_API)]
    assert events == []
