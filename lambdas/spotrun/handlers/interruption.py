"""EventBridge instance events (via SQS) -> replace, checkpoint early, or requeue the attempt."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from spotrun.attempts import handle_instance_event
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.interruptions import Action, classify_event
from spotrun.handlers.common import count_per_pool, instrumented, load_json, logger, metrics, run_batch


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> PartialItemFailureResponse:
    cp = control or default_control_plane()

    def handle(record: SQSRecord) -> None:
        body = load_json(record.body, "event")
        instance_event = classify_event(body)
        if instance_event.action == Action.IGNORE:
            metrics.add_metric(name="IgnoredEvents", unit=MetricUnit.Count, value=1)
            if instance_event.reason:  # a malformed event of a kind spotrun handles: say why it was let go
                logger.warning("ignored an instance event", extra={"message_id": record.message_id,
                                                                   "kind": instance_event.kind,
                                                                   "problem": instance_event.reason})
            return
        outcome = handle_instance_event(cp, instance_event)
        count_per_pool("Interruptions", outcome.interrupted_pools)
        count_per_pool("Launches", outcome.launches.launched_by_pool)
        count_per_pool("CapacityRefusals", outcome.launches.refused_by_pool)
        if instance_event.at is not None:
            latency = (cp.clock() - instance_event.at).total_seconds()
            metrics.add_metric(name=f"{instance_event.kind}Latency", unit=MetricUnit.Seconds, value=max(latency, 0.0))
        logger.info("instance event", extra={"kind": instance_event.kind, "action": instance_event.action,
                                             "replaced": outcome.replaced, "requeued": outcome.requeued,
                                             "move_scheduled": outcome.move_scheduled})

    return run_batch(event, context, handle)
