"""The scale benchmark's submit measurement, small and fast: submitting a job must keep writing its
tasks with BatchWriteItem (25 items a call), never one request per task."""

from __future__ import annotations

import math

import pytest

from bench.scale.plane import job_spec
from bench.scale.submit import submit_on_fakes

TASKS = 2_000
FIXED_DYNAMODB_REQUESTS = 2  # the job-exists check and the job + event transaction


@pytest.mark.parametrize("parameters", [False, True], ids=["tasks-count", "parameters"])
def test_submit_writes_its_tasks_in_batches_of_25(parameters: bool) -> None:
    result = submit_on_fakes(job_spec(TASKS, parameters=parameters), latency_seconds=0.0)

    requests = result["requests"]
    assert requests.get("dynamodb:BatchWriteItem", 0) == math.ceil(TASKS / 25), requests
    assert result["dynamodb_items_written"] == TASKS
    assert "dynamodb:PutItem" not in requests and "dynamodb:UpdateItem" not in requests
    dynamodb = sum(n for name, n in requests.items() if name.startswith("dynamodb:"))
    assert dynamodb == math.ceil(TASKS / 25) + FIXED_DYNAMODB_REQUESTS
    assert result["estimated_wru"]["per_task"] == pytest.approx(3.0, abs=0.01)  # item + by_state + by_job entries
