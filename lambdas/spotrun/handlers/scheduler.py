"""Control messages (SNS -> SQS) -> a job's tasks admitted, launched, suspended, resumed or cancelled."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.messages import ControlMessage
from spotrun.handlers.common import count_per_pool, instrumented, logger, metrics, parse_body, run_batch
from spotrun.resources import MessageType
from spotrun.scheduling import reconcile_job


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> PartialItemFailureResponse:
    cp = control or default_control_plane()
    done: set[str] = set()  # one reconcile per job per batch is enough: it looks at the whole job

    def handle(record: SQSRecord) -> None:
        message = parse_body(record, ControlMessage, sns_envelope=True)
        cancelled = message.indexes if message.type == MessageType.JOB_CONTROL else ()
        if message.job_id in done and not cancelled:
            return
        report = reconcile_job(cp, message.job_id, cancelled=cancelled)
        done.add(message.job_id)
        metrics.add_metric(name="TasksAdmitted", unit=MetricUnit.Count, value=report.admitted)
        metrics.add_metric(name="LaunchCalls", unit=MetricUnit.Count, value=report.launch_calls)
        if report.failed_for_image:
            metrics.add_metric(name="TasksFailedForImage", unit=MetricUnit.Count, value=report.failed_for_image)
        count_per_pool("Launches", report.launched_by_pool)
        count_per_pool("CapacityRefusals", report.refused_by_pool)
        logger.info("reconciled", extra={"job_id": message.job_id, "type": message.type, "admitted": report.admitted,
                                         "launched": report.launched, "failed_pools": report.failed_pools,
                                         "failed_for_image": report.failed_for_image})

    return run_batch(event, context, handle)
