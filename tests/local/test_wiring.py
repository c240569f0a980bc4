"""The local runtime runs what `spotrun.resources` declares: every queue consumed by its declared function,
every scheduled function on its rate, the handlers found by their declared paths. A queue or function
added to the declarations runs locally with no other edit."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from spotrun import resources
from spotrun.handlers import api, reaper
from spotrun.resources import FunctionDef, QueueDef
from spotrun_local import wiring
from spotrun_local.runtime import LocalRuntime, RuntimeOptions


def test_every_queue_is_consumed_by_the_handler_its_declared_consumer_names():
    consumers = wiring.consumers()
    assert [c.queue for c in consumers] == list(resources.QUEUES)
    for consumer in consumers:
        assert consumer.function == resources.function(consumer.queue.consumer)
        module, _, name = consumer.function.handler.rpartition(".")
        assert consumer.handler.__module__ == module and consumer.handler.__name__ == name


def test_handlers_are_imported_from_their_declared_paths():
    assert wiring.handler("api") is api.handler
    assert wiring.handler("reaper") is reaper.handler


def test_the_scheduled_functions_are_the_ones_with_a_rate():
    assert [(s.function.key, s.minutes, s.handler) for s in wiring.schedules()] == [
        (f.key, f.schedule_minutes, wiring.handler(f.key)) for f in resources.FUNCTIONS if f.schedule_minutes]
    assert [s.function.key for s in wiring.schedules()] == ["reaper"]


def test_a_lambda_context_carries_the_declared_memory_and_timeout():
    context = wiring.lambda_context(resources.function("api"), request_id="r-1")
    assert (context.function_name, context.memory_limit_in_mb, context.aws_request_id) == (
        "spotrun-api-local", resources.function("api").memory_mb, "r-1")
    assert context.get_remaining_time_in_millis() == resources.function("api").timeout_seconds * 1000


# A function and a queue the runtime has never heard of, declared only in `spotrun.resources`.
CALLS: list[tuple[str, Any, Any, Any]] = []
CALLED = threading.Event()


def probe_handler(event: dict[str, Any], context: Any, control: Any = None) -> dict[str, Any]:
    CALLS.append(("probe", [r["body"] for r in event["Records"]], context.function_name, control))
    CALLED.set()
    return {"batchItemFailures": []}


def tick_handler(event: dict[str, Any], context: Any, control: Any = None) -> dict[str, Any]:
    CALLS.append(("tick", event["detail-type"], context.function_name, control))
    return {}


def test_a_queue_and_a_scheduled_function_declared_in_resources_run_locally(aws, monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "FUNCTIONS", (
        FunctionDef("probe", f"{__name__}.probe_handler", "consumes the probe queue", timeout_seconds=7),
        FunctionDef("tick", f"{__name__}.tick_handler", "runs every minute", schedule_minutes=1),
    ))
    monkeypatch.setattr(resources, "QUEUES", (QueueDef("probe", consumer="probe", visibility_timeout_seconds=10,
                                                       batch_size=10),))
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="probe")["QueueUrl"]
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path, reaper_seconds=0.2))  # type: ignore[arg-type]
    runtime.env = {"SPOTRUN_QUEUE_URLS": json.dumps({"probe": url})}
    control = object()
    monkeypatch.setattr(runtime, "build_control_plane", lambda session: control)
    CALLS.clear()
    CALLED.clear()
    generation = runtime.start_control_plane()
    try:
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        assert CALLED.wait(20), "the declared consumer never got the message"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(call[0] == "tick" for call in CALLS) < 2:
            time.sleep(0.1)
    finally:
        generation.stop.set()
        for thread in generation.threads:
            thread.join(timeout=5)
    assert ("probe", ["hello"], "spotrun-probe-local", control) in CALLS
    ticks = [call for call in CALLS if call[0] == "tick"]
    assert len(ticks) >= 2, CALLS
    assert ticks[0] == ("tick", "Scheduled Event", "spotrun-tick-local", control)
    assert {thread.name for thread in generation.threads} == {f"pump-probe-{generation.number}",
                                                              f"tick-{generation.number}"}


@pytest.fixture(autouse=True)
def _forget_calls():
    yield
    CALLS.clear()


def test_the_api_worker_routes_and_dashboard_functions_are_found_by_how_they_are_invoked():
    from spotrun_local.wiring import invoked_by

    kinds = [f.invoked_by for f in resources.FUNCTIONS if f.invoked_by]
    assert sorted(kinds) == sorted({resources.API, resources.WORKER_ROUTES, resources.DASHBOARD})  # one each
    assert [invoked_by(k).key for k in (resources.API, resources.WORKER_ROUTES, resources.DASHBOARD)] == [
        "api", "worker-api", "console"]
    assert wiring.handler(invoked_by(resources.DASHBOARD).key).__module__ == "spotrun.handlers.console"


def test_the_local_compute_launches_with_the_deployments_subnets_and_placement_groups(aws, env, tmp_path):
    """Found trying `placement: cluster` on `make serve`: the local compute was built without the
    deployment's placement groups, so every zone refused such a gang as 'Unsupported'."""
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    runtime.env = env
    compute = runtime.build_control_plane(aws).compute
    assert set(compute.subnets) == set(compute.placement_groups) and compute.placement_groups
    assert compute.placement_groups == json.loads(env["SPOTRUN_PLACEMENT_GROUPS"])
