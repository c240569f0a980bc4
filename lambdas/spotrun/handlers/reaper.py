"""Every minute: lost workers, stuck launches, orphan instances, timeouts; reconcile open jobs."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from spotrun.aws import default_control_plane
from spotrun.control import ControlPlane
from spotrun.handlers.common import count_per_pool, instrumented, logger, metric_by, metrics
from spotrun.reaping import sweep


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> dict[str, Any]:
    report = sweep(control or default_control_plane())
    for name, value in (("LostWorkers", len(report.lost)), ("StuckLaunches", len(report.stuck_launches)),
                        ("Relaunched", len(report.relaunched)), ("ScheduledMoves", len(report.moved)),
                        ("OrphanInstances", len(report.orphans)), ("TimedOutJobs", len(report.timed_out))):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    count_per_pool("Interruptions", report.interrupted_pools)
    count_per_pool("Launches", report.launches.launched_by_pool)
    count_per_pool("CapacityRefusals", report.launches.refused_by_pool)
    # Gauges, each minute: tasks of open jobs per state, and what the running instances cost per hour.
    for state in ("QUEUED", "LAUNCHING", "RUNNING", "SUSPENDED"):
        metric_by("Tasks", MetricUnit.Count, report.tasks_by_state.get(state, 0), state=state)
    for market in ("spot", "on-demand"):
        metric_by("SpendPerHour", MetricUnit.NoUnit, report.spend_per_hour.get(market, 0.0), market=market)
    metrics.add_metric(name="SpendPerHour", unit=MetricUnit.NoUnit, value=sum(report.spend_per_hour.values()))
    metrics.add_metric(name="OnDemandEquivalentPerHour", unit=MetricUnit.NoUnit,
                       value=report.on_demand_equivalent_per_hour)
    logger.info("sweep", extra={"lost": report.lost, "stuck": report.stuck_launches, "relaunched": report.relaunched,
                                "orphans": report.orphans,
                                "timed_out": report.timed_out, "reconciled": report.reconciled})
    return {"lost": len(report.lost), "stuck": len(report.stuck_launches), "orphans": len(report.orphans),
            "timed_out": len(report.timed_out), "reconciled": report.reconciled}
