"""Every minute: lost workers, stuck launches, orphan instances, timeouts; reconcile open jobs."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.handlers.common import instrumented, logger, metrics
from spotrun.reaping import sweep


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> dict[str, Any]:
    report = sweep(control or default_control_plane())
    for name, value in (("LostWorkers", len(report.lost)), ("StuckLaunches", len(report.stuck_launches)),
                        ("Relaunched", len(report.relaunched)), ("ScheduledMoves", len(report.moved)),
                        ("OrphanInstances", len(report.orphans)), ("TimedOutJobs", len(report.timed_out))):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("sweep", extra={"lost": report.lost, "stuck": report.stuck_launches, "relaunched": report.relaunched,
                                "orphans": report.orphans,
                                "timed_out": report.timed_out, "reconciled": report.reconciled})
    return {"lost": len(report.lost), "stuck": len(report.stuck_launches), "orphans": len(report.orphans),
            "timed_out": len(report.timed_out), "reconciled": report.reconciled}
