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
from tests.cli.conftest import JOB_ID, FakeApi
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


# ---------------------------------------------------------------- the console page

class FakeConsole:
    """The console function: records the events it is invoked with, answers a widget's HTML."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> str:
        self.events.append(event)
        return f"<p>widget {event.get('view', 'jobs')}</p>"


@pytest.fixture
def console_gateway(fake_api: FakeApi) -> Any:
    from spotrun_local.gateway import new_local_credentials, start_gateway

    console = FakeConsole()
    server = start_gateway(fake_api, new_local_credentials(), console=console)
    yield server, console
    server.stop()


def page_call(gateway: Gateway, params: dict[str, Any], token: str | None = None, **browser: Any) -> Any:
    return requests.post(f"{gateway.url}/console/call?token={gateway.ui_token if token is None else token}",
                         json={"params": params, "browser": browser}, timeout=5)


def test_the_page_needs_no_signature_and_emulates_the_dashboard_with_a_script_of_its_own(gateway: Gateway) -> None:
    response = requests.get(gateway.ui_url, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "/console/call" in response.text and 'querySelectorAll("cwdb-action")' in response.text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_the_page_gets_the_console_functions_widget_with_the_event_cloudwatch_sends(console_gateway: Any) -> None:
    gateway, console = console_gateway
    response = page_call(gateway, {"view": "job", "job_id": JOB_ID}, timezone={"label": "Europe/Paris",
                                                                                "offsetISO": "+01:00"}, width=900)
    assert response.status_code == 200 and response.text == "<p>widget job</p>"
    assert response.headers["Content-Type"].startswith("text/html")
    [event] = console.events
    assert event["view"] == "job" and event["job_id"] == JOB_ID  # params at the top, as CloudWatch sends them
    context = event["widgetContext"]
    assert context["params"] == {"view": "job", "job_id": JOB_ID}
    assert context["timezone"] == {"label": "Europe/Paris", "offsetISO": "+01:00", "offsetInMinutes": 60}
    assert context["width"] == 900 and context["dashboardName"] == "spotrun-local"
    assert set(context) >= {"widgetId", "accountId", "locale", "period", "timeRange", "theme", "forms", "height"}


def test_the_console_needs_the_token_a_json_post_and_a_sensible_body(console_gateway: Any) -> None:
    gateway, console = console_gateway
    assert page_call(gateway, {}, token="").status_code == 403
    assert page_call(gateway, {}, token="wrong").status_code == 403
    form = requests.post(f"{gateway.url}/console/call?token={gateway.ui_token}", data={"params": "{}"}, timeout=5)
    assert form.status_code == 405  # what a cross-site form could send
    assert requests.get(f"{gateway.url}/console/call?token={gateway.ui_token}", timeout=5).status_code == 405
    bad = requests.post(f"{gateway.url}/console/call?token={gateway.ui_token}", json={"params": "x"}, timeout=5)
    assert bad.status_code == 400
    assert page_call(gateway, {}, timezone={"offsetISO": "noon"}).status_code == 400
    assert console.events == []


def test_the_console_answers_only_to_127_0_0_1(console_gateway: Any) -> None:
    gateway, console = console_gateway
    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5, source_address=("127.0.0.2", 0))
    try:
        connection.request("POST", f"/console/call?token={gateway.ui_token}", body=b'{"params": {}}',
                           headers={"Content-Type": "application/json"})
    except OSError as error:
        pytest.skip(f"cannot connect from 127.0.0.2 here: {error}")
    response = connection.getresponse()
    assert response.status == 403 and "127.0.0.1" in json.loads(response.read())["message"]
    connection.close()
    assert console.events == []


def test_a_gateway_without_the_console_says_so(gateway: Gateway) -> None:
    assert page_call(gateway, {}).status_code == 404


def test_instructions_tell_how_to_use_the_gateway(gateway: Gateway) -> None:
    text = gateway.instructions()
    assert f"export SPOTRUN_API={gateway.url}" in text
    assert f"export AWS_ACCESS_KEY_ID={gateway.credentials.access_key_id}" in text
    assert f"export AWS_SECRET_ACCESS_KEY={gateway.credentials.secret_access_key}" in text
    assert gateway.ui_url in text and gateway.ui_url.endswith(f"/?token={gateway.ui_token}")
