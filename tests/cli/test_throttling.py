"""The CLI sends a request API Gateway throttled (429) again, with backoff, instead of failing the command."""

from __future__ import annotations

import random
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials

from spotrun_cli.client import THROTTLED_TRIES, ApiClient, ApiError


def answer(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body  # noqa: SLF001 - a canned answer
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    return response


class Http:
    def __init__(self, *answers: requests.Response):
        self.answers, self.sent = list(answers), []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append((method, url, kwargs["headers"]["Authorization"]))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def client(http: Http, slept: list[float]) -> ApiClient:
    return ApiClient("https://abc.execute-api.us-east-1.amazonaws.com/v1", Credentials("AKID", "secret"),
                     "us-east-1", http=http, sleep=slept.append, jitter=random.Random(7))  # type: ignore[arg-type]


def test_a_throttled_request_is_sent_again_until_it_gets_through():
    throttled = answer(429, b'{"message": "Too Many Requests"}')
    http, slept = Http(throttled, throttled, answer(200, b'{"jobs": [], "next_token": null}')), []
    assert client(http, slept).list_jobs() == {"jobs": [], "next_token": None}
    assert len(http.sent) == 3 and len(slept) == 2
    assert 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0  # exponential, full jitter


def test_retry_after_is_honoured_and_the_tries_are_bounded():
    http, slept = Http(answer(429, b'{"message": "slow"}', {"Retry-After": "3"})), []
    with pytest.raises(ApiError) as raised:
        client(http, slept).get_job("j-0194f3a2b1c0a1b2c3d4")
    assert raised.value.status == 429 and len(http.sent) == THROTTLED_TRIES and slept == [3.0] * (THROTTLED_TRIES - 1)


@pytest.mark.parametrize("status", [400, 403, 404, 409, 500, 502])
def test_other_errors_are_not_retried(status):
    http, slept = Http(answer(status, b'{"error": "no"}')), []
    with pytest.raises(ApiError):
        client(http, slept).control("j-0194f3a2b1c0a1b2c3d4", "cancel")
    assert len(http.sent) == 1 and slept == []
