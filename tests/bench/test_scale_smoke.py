"""The scale benchmark's submit measurement, small and fast: submitting a job must keep writing its
tasks with BatchWriteItem (25 items a call), never one request per task, and a sweep by count must
write only the tasks it stores at submit (`spotrun.sweeps`), whatever its size."""

from __future__ import annotations

import math

import pytest

from bench.scale.plane import job_spec
from bench.scale.submit import submit_on_fakes
from spotrun.sweeps import EAGER_TASKS

FIXED_DYNAMODB_REQUESTS = 2  # the job-exists check and the job + event transaction


@pytest.mark.parametrize(("tasks", "parameters", "stored"), [
    (2_000, False, EAGER_TASKS), (2_000, True, 2_000), (1_000_000, False, EAGER_TASKS),
], ids=["tasks-count", "parameters", "a-million-by-count"])
def test_submit_writes_its_tasks_in_batches_of_25(tasks: int, parameters: bool, stored: int) -> None:
    result = submit_on_fakes(job_spec(tasks, parameters=parameters), latency_seconds=0.0)

    requests = result["requests"]
    assert requests.get("dynamodb:BatchWriteItem", 0) == math.ceil(stored / 25), requests
    assert result["dynamodb_items_written"] == stored
    assert "dynamodb:PutItem" not in requests and "dynamodb:UpdateItem" not in requests
    dynamodb = sum(n for name, n in requests.items() if name.startswith("dynamodb:"))
    assert dynamodb == math.ceil(stored / 25) + FIXED_DYNAMODB_REQUESTS
    units = result["estimated_wru"]
    assert (units["table"] + units["indexes"]) / stored == pytest.approx(3.0, abs=0.01)  # item + by_state + by_job
