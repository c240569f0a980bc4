"""SQS heartbeats -> liveness and progress of each attempt."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from spotrun.attempts import record_heartbeat
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.messages import Heartbeat
from spotrun.handlers.common import from_its_attempt, instrumented, metrics, run_batch


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> PartialItemFailureResponse:
    cp = control or default_control_plane()

    def handle(beat: Heartbeat) -> None:
        if not record_heartbeat(cp, beat):
            metrics.add_metric(name="StaleHeartbeats", unit=MetricUnit.Count, value=1)

    return run_batch(event, context, from_its_attempt(Heartbeat, handle))
