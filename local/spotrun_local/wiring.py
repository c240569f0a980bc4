"""What the local runtime runs, derived from `spotrun.resources` as the CDK stack derives what it deploys.

Each function's handler is imported from its `FunctionDef.handler` path (what Lambda does with the
stack's `Handler` property), each queue is consumed by the function its `QueueDef.consumer` names,
and each function with a `schedule_minutes` runs on that rate. A queue or function added to
`spotrun.resources` is therefore wired locally with no second edit, and a handler moved to another
module follows its declaration. The Lambda context the handlers' Powertools decorators read is
built from the same declarations (`lambda_context`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spotrun import resources
from spotrun.resources import FunctionDef, QueueDef

# A control-plane handler: (event, Lambda context, control=ControlPlane) -> response.
Handler = Callable[..., dict[str, Any]]


def handler(key: str) -> Handler:
    """The handler of the function `key`, imported from its declared `module.function` path."""
    module, _, name = resources.function(key).handler.rpartition(".")
    found: Handler = getattr(importlib.import_module(module), name)
    return found


@dataclass(frozen=True)
class Consumer:
    """A queue and the function that consumes it (a Lambda event source mapping in the stack)."""

    queue: QueueDef
    function: FunctionDef
    handler: Handler


def consumers() -> list[Consumer]:
    return [Consumer(queue, resources.function(queue.consumer), handler(queue.consumer)) for queue in resources.QUEUES]


def invoked_by(kind: str) -> FunctionDef:
    """The function behind the users' API, the worker routes or the dashboards (`resources.API`, ...)."""
    return next(f for f in resources.FUNCTIONS if f.invoked_by == kind)


@dataclass(frozen=True)
class Scheduled:
    """A function EventBridge invokes on a rate (the reaper, every minute)."""

    function: FunctionDef
    handler: Handler

    @property
    def minutes(self) -> int:
        return self.function.schedule_minutes or 0


def schedules() -> list[Scheduled]:
    return [Scheduled(f, handler(f.key)) for f in resources.FUNCTIONS if f.schedule_minutes is not None]


def scheduled_event(function: FunctionDef, region: str, account: str) -> dict[str, Any]:
    """The event an EventBridge schedule rule sends its target."""
    return {"version": "0", "id": "local", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "region": region, "resources": [
                f"arn:aws:events:{region}:{account}:rule/spotrun-{function.key}-schedule"], "detail": {}}


class LambdaContext:
    """The parts of the Lambda context object Powertools reads (and a handler may ask: its time left)."""

    def __init__(self, function_name: str, *, memory_mb: int = 512, timeout_seconds: int = 60,
                 request_id: str = "local", region: str = "us-east-1", account: str = "123456789012"):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self.timeout_seconds = timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


def lambda_context(function: FunctionDef, request_id: str = "local") -> LambdaContext:
    """The context of one invocation of `function`, with its declared memory and timeout."""
    return LambdaContext(f"spotrun-{function.key}-local", memory_mb=function.memory_mb,
                         timeout_seconds=function.timeout_seconds, request_id=request_id)
