"""SQS completion reports -> the attempt's outcome, classified by scope, and the task's next state."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from spotrun.attempts import complete
from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.domain.messages import CompletionReport
from spotrun.handlers.common import from_its_attempt, instrumented, logger, metrics, run_batch
from spotrun.resources import WORKER_IMAGE_FAULTS_METRIC


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> PartialItemFailureResponse:
    cp = control or default_control_plane()

    def handle(report: CompletionReport) -> None:
        result = complete(cp, report)
        if result.change is not None:
            metrics.add_metric(name=result.change.event, unit=MetricUnit.Count, value=1)
        if result.image_fault_noted:  # once per image and checkpoint method; its alarm tells the operators
            metrics.add_metric(name=WORKER_IMAGE_FAULTS_METRIC, unit=MetricUnit.Count, value=1)
        if report.outcome == "interrupted" and report.unsaved_seconds is not None:
            # What this interruption cost: the progress made since the last committed checkpoint.
            metrics.add_metric(name="WorkLostSeconds", unit=MetricUnit.Seconds, value=report.unsaved_seconds)
        logger.info("completion", extra={"job_id": report.job_id, "task": report.index, "attempt": report.attempt,
                                         "outcome": report.outcome, "applied": result.applied})

    return run_batch(event, context, from_its_attempt(CompletionReport, handle))
