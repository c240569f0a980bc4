"""The same console locally as on AWS: the local page's widget is the console function's HTML for the
event CloudWatch sends (its documented sample), byte for byte."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from spotrun import resources
from spotrun.handlers import console
from spotrun_local.gateway import Gateway, new_local_credentials, start_gateway
from spotrun_local.wiring import invoked_by, lambda_context
from tests.integration.test_console import DOCUMENTED_SAMPLE
from tests.integration.test_logs_and_actions import put_lines, running


@pytest.fixture
def page(cp: Any) -> Iterator[Gateway]:
    gateway = start_gateway(lambda event, context: {"statusCode": 404}, new_local_credentials(),
                            console=lambda event, context: console.handler(event, context, control=cp))
    yield gateway
    gateway.stop()


def as_cloudwatch_sends(params: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(DOCUMENTED_SAMPLE)
    del event["original"]
    event["widgetContext"]["params"] = dict(params)
    return {**params, "widgetContext": event["widgetContext"]}


def test_the_local_page_shows_what_the_widget_function_returns_for_cloudwatchs_event(cp, env, aws, context, page):
    _, job_id = running(cp, env, aws, context, tasks=2)
    put_lines(aws, env, job_id, 0, cp.store.get_task(job_id, 0).attempt, ["hello from task 0"])
    function = lambda_context(invoked_by(resources.DASHBOARD))
    sample_zone = DOCUMENTED_SAMPLE["widgetContext"]["timezone"]
    for params in ({}, {"view": "jobs", "state": "RUNNING"}, {"view": "job", "job_id": job_id},
                   {"view": "job", "job_id": job_id, "task": 1}, {"view": "log", "job_id": job_id, "task": 0}):
        widget = console.handler(as_cloudwatch_sends(params), function, control=cp)
        local = requests.post(f"{page.url}/console/call?token={page.ui_token}", timeout=10, json={
            "params": params, "browser": {"timezone": {"label": sample_zone["label"],
                                                       "offsetISO": sample_zone["offsetISO"]}}})
        assert local.status_code == 200, local.text
        assert local.text == widget, params
        assert "<cwdb-action" in widget  # buttons, which the page's own script brings to life
