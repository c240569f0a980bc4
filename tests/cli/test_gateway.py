"""The local API gateway: proxy events like API Gateway's, SigV4 checked like AWS_IAM, the UI views."""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials

from spotrun_cli.client import ApiClient
from spotrun_local.gateway import (
    LOCAL_USER_ARN,
    Gateway,
    LocalCredentials,
    new_local_credentials,
    proxy_event,
    verify_sigv4,
)
from tests.cli.conftest import JOB_ID, FakeApi, job_view, task_view
from tests.support import api_event


def signer(gateway: Any, key: str | None = None, secret: str | None = None, service: str = "execute-api") -> ApiClient:
    creds = gateway.credentials
    client = ApiClient(gateway.url, Credentials(key or creds.access_key_id, secret or creds.secret_access_key),
                       "us-east-1")
    if service != "execute-api":
        import spotrun_cli.client as module

        client_signed = client.signed

        def signed(method: str, url: str, body: bytes | None) -> Any:
            original, module.SERVICE = module.SERVICE, service
            try:
                return client_signed(method, url, body)
            finally:
                module.SERVICE = original
        client.signed = signed  # type: ignore[method-assign]
    return client


def send(client: ApiClient, method: str, path: str, body: bytes | None = None,
         tamper: bytes | None = None) -> requests.Response:
    url, headers, data = client.signed(method, client.url(path), body)
    return requests.request(method, url, headers=headers, data=tamper if tamper is not None else data, timeout=5)


def test_new_credentials_are_random_and_shaped_like_aws() -> None:
    a, b = new_local_credentials(), new_local_credentials()
    assert a != b and len(a.access_key_id) == 20 and a.access_key_id.startswith("AKIA")
    assert len(a.secret_access_key) == 40
    assert a.env() == {"AWS_ACCESS_KEY_ID": a.access_key_id, "AWS_SECRET_ACCESS_KEY": a.secret_access_key}


def test_the_event_has_the_shape_api_gateway_delivers() -> None:
    event = proxy_event("GET", "/jobs?state=RUNNING&limit=5", [("Host", "h"), ("X-A", "1"), ("X-A", "2")], None,
                        source_ip="127.0.0.1", access_key="AKIAX")
    reference = api_event("GET", "/jobs", query={"state": "RUNNING"})

    def keys(value: dict[str, Any]) -> set[str]:
        return set(value)
    assert keys(event) == keys(reference)
    assert keys(event["requestContext"]) == keys(reference["requestContext"])
    assert keys(event["requestContext"]["identity"]) == keys(reference["requestContext"]["identity"])
    assert event["queryStringParameters"] == {"state": "RUNNING", "limit": "5"}
    assert event["multiValueQueryStringParameters"] == {"state": ["RUNNING"], "limit": ["5"]}
    assert event["multiValueHeaders"]["X-A"] == ["1", "2"] and event["headers"]["X-A"] == "2"
    assert event["pathParameters"] == {"proxy": "jobs"} and event["requestContext"]["stage"] == "local"
    assert event["requestContext"]["identity"]["userArn"] == LOCAL_USER_ARN
    assert proxy_event("GET", "/jobs", [], None, source_ip="x", access_key="k")["queryStringParameters"] is None


def test_a_signed_request_reaches_the_handler_with_the_local_identity(gateway: Gateway, fake_api: FakeApi) -> None:
    fake_api.answer("POST /jobs", 202, {"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 1})
    response = send(signer(gateway), "POST", "/jobs", b'{"name": "x"}')
    assert response.status_code == 202 and response.json()["job_id"] == JOB_ID
    assert response.headers["Content-Type"] == "application/json"
    [event] = fake_api.events
    assert event["body"] == '{"name": "x"}' and event["isBase64Encoded"] is False
    identity = event["requestContext"]["identity"]
    assert identity["userArn"] == "arn:aws:iam::000000000000:user/local"
    assert identity["accessKey"] == gateway.credentials.access_key_id and identity["sourceIp"] == "127.0.0.1"


def refused(response: requests.Response, fake_api: FakeApi, needle: str) -> None:
    assert response.status_code == 403, response.text
    assert needle in response.json()["message"]
    assert fake_api.events == []  # the handler never saw it


def test_no_authorization_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    refused(requests.get(f"{gateway.url}/jobs", timeout=5), fake_api, "missing Authorization")


def test_another_access_key_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    refused(send(signer(gateway, key="AKIAOTHEROTHEROTHER1"), "GET", "/jobs"), fake_api, "unknown access key")


def test_a_wrong_secret_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    refused(send(signer(gateway, secret="not-the-secret"), "GET", "/jobs"), fake_api, "signature does not match")


def test_a_body_changed_after_signing_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    response = send(signer(gateway), "POST", "/jobs", b'{"name": "good"}', tamper=b'{"name": "evil"}')
    refused(response, fake_api, "signature does not match")


def test_another_service_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    refused(send(signer(gateway, service="s3"), "GET", "/jobs"), fake_api, "not 'execute-api'")


def test_a_changed_query_is_refused(gateway: Gateway, fake_api: FakeApi) -> None:
    client = signer(gateway)
    url, headers, _ = client.signed("GET", client.url("/jobs", {"limit": 5}), None)
    refused(requests.get(url.replace("limit=5", "limit=100"), headers=headers, timeout=5), fake_api,
            "signature does not match")


def test_an_old_signature_is_refused(fake_api: FakeApi) -> None:
    credentials = new_local_credentials()
    late = Gateway(fake_api, credentials, clock=lambda: datetime.now(UTC) + timedelta(minutes=6)).start()
    try:
        refused(send(signer(late), "GET", "/jobs"), fake_api, "expired")
    finally:
        late.stop()


def test_verification_is_pure_and_checks_the_declared_payload_hash() -> None:
    credentials = LocalCredentials("AKIAAAAAAAAAAAAAAAAA", "s" * 40)
    client = ApiClient("http://127.0.0.1:1", Credentials(credentials.access_key_id, credentials.secret_access_key),
                       "us-east-1")
    url, headers, body = client.signed("POST", client.url("/jobs"), b"{}")
    target = url.removeprefix("http://127.0.0.1:1")
    received = [*headers.items(), ("Host", "127.0.0.1:1")]
    assert verify_sigv4("POST", target, received, body, credentials) is None
    lying = [*received, ("X-Amz-Content-SHA256", "0" * 64)]
    assert "does not match the body" in verify_sigv4("POST", target, lying, body, credentials)
    assert "does not match" in verify_sigv4("POST", target, received, b"{ }", credentials)
    assert "does not match" in verify_sigv4("GET", target, received, body, credentials)


def test_a_crashing_handler_is_a_502(gateway: Gateway) -> None:
    def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")
    gateway.handler = crash
    response = send(signer(gateway), "GET", "/jobs")
    assert response.status_code == 502 and response.json() == {"message": "Internal server error"}


# ---------------------------------------------------------------- the web page and its views

def test_the_page_needs_no_signature(gateway: Gateway) -> None:
    response = requests.get(gateway.ui_url, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "/ui/jobs" in response.text and "setInterval(refresh, 2000)" in response.text


def test_ui_views_need_the_token(gateway: Gateway, fake_api: FakeApi) -> None:
    fake_api.answer("GET /jobs", 200, {"jobs": [job_view()], "next_token": None})
    assert requests.get(f"{gateway.url}/ui/jobs", timeout=5).status_code == 403
    assert requests.get(f"{gateway.url}/ui/jobs?token=wrong", timeout=5).status_code == 403
    assert fake_api.events == []
    response = requests.get(f"{gateway.url}/ui/jobs?token={gateway.ui_token}", timeout=5)
    assert response.status_code == 200 and response.json()["jobs"][0]["job_id"] == JOB_ID
    [event] = fake_api.events
    assert event["httpMethod"] == "GET" and event["path"] == "/jobs"
    assert event["requestContext"]["identity"]["userArn"] == LOCAL_USER_ARN


def test_ui_job_view_combines_the_job_and_its_tasks(gateway: Gateway, fake_api: FakeApi) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view())
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks", 200, {"tasks": [task_view(0), task_view(1)], "next_token": "t"})
    response = requests.get(f"{gateway.url}/ui/jobs/{JOB_ID}?token={gateway.ui_token}", timeout=5)
    body = response.json()
    assert body["job"]["job_id"] == JOB_ID and [t["index"] for t in body["tasks"]] == [0, 1] and body["more_tasks"]
    missing = requests.get(f"{gateway.url}/ui/jobs/j-00000000000000000000?token={gateway.ui_token}", timeout=5)
    assert missing.status_code == 404
    assert requests.get(f"{gateway.url}/ui/jobs/../x?token={gateway.ui_token}", timeout=5).status_code == 404


def test_ui_views_answer_only_to_127_0_0_1(gateway: Gateway, fake_api: FakeApi) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5, source_address=("127.0.0.2", 0))
    try:
        connection.request("GET", f"/ui/jobs?token={gateway.ui_token}")
    except OSError as error:
        pytest.skip(f"cannot connect from 127.0.0.2 here: {error}")
    response = connection.getresponse()
    assert response.status == 403 and "127.0.0.1" in json.loads(response.read())["message"]
    connection.close()
    assert fake_api.events == []


def test_instructions_tell_how_to_use_the_gateway(gateway: Gateway) -> None:
    text = gateway.instructions()
    assert f"export SPOTRUN_API={gateway.url}" in text
    assert f"export AWS_ACCESS_KEY_ID={gateway.credentials.access_key_id}" in text
    assert f"export AWS_SECRET_ACCESS_KEY={gateway.credentials.secret_access_key}" in text
    assert gateway.ui_url in text and gateway.ui_url.endswith(f"/?token={gateway.ui_token}")
