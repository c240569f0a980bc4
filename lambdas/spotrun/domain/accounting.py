"""A job's accounting: what each ended attempt adds to its job's per-pool counters, and the
statistics (per pool and in total) derived from them.

Every ended attempt adds its executions, failures, interruptions, execution and instance seconds and
spot cost to the job item in the same transaction that ends it (the store writes what
`attempt_usage` and `drain_usage` answer), so these figures agree with the timeline and cost one
read, however many tasks the job has.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from spotrun.domain.catalog import load_catalog
from spotrun.domain.model import FINISHED_JOB_STATES, Job

STAT_SEPARATOR = "|"  # job statistics are kept as "<pool>|<measure>" -> total


def pool_usage(executions: int, failures: int, interruptions: int, exec_seconds: float,
               nodes: int = 1) -> dict[str, float]:
    """What one ended attempt adds to its pool's statistics (and its `nodes` instances no longer run there).
    A gang's interruption counts once: the pool lost one gang, whichever of its instances was warned."""
    return {"executions": executions, "failures": failures, "interruptions": interruptions,
            "exec_seconds": exec_seconds, "running": -nodes}


def attempt_usage(pool: str, launched_at: datetime | None, price_per_hour: float | None, now: datetime,
                  executions: int, failures: int, interruptions: int, exec_seconds: float,
                  nodes: int = 1) -> dict[str, float]:
    """What one ended attempt adds to its job's per-pool statistics (`<pool>|<measure>` keys): a gang's
    instance seconds and cost are its `nodes` instances' (`price_per_hour` is one instance's)."""
    instance_seconds = nodes * max(0.0, (now - launched_at).total_seconds()) if launched_at else 0.0
    measures = {"executions": executions, "failures": failures, "interruptions": interruptions,
                "exec_seconds": round(exec_seconds, 3), "instance_seconds": round(instance_seconds, 3),
                "cost": round(instance_seconds / 3600 * (price_per_hour or 0.0), 8)}
    return {f"{pool}{STAT_SEPARATOR}{name}": value for name, value in measures.items()}


def drain_usage(pool: str, ended_at: datetime, price_per_hour: float | None, now: datetime,
                nodes: int = 1) -> dict[str, float]:
    """An interrupted attempt ended (for its task) at the replacement, but its instances ran on until its
    final report: the instance seconds and cost of that drain."""
    seconds = nodes * max(0.0, (now - ended_at).total_seconds())
    return {f"{pool}{STAT_SEPARATOR}instance_seconds": round(seconds, 3),
            f"{pool}{STAT_SEPARATOR}cost": round(seconds / 3600 * float(price_per_hour or 0.0), 8)}


def job_statistics(job: Job, now: datetime) -> dict[str, Any]:
    pools: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, value in job.stats.items():
        pool, _, measure = key.rpartition(STAT_SEPARATOR)
        pools[pool][measure] += value
    catalog = load_catalog()
    per_pool = {}
    totals: dict[str, float] = defaultdict(float)
    for pool, measures in sorted(pools.items()):
        instance_type = pool.split("@", 1)[0]
        on_demand_price = catalog.on_demand_price(instance_type)
        on_demand = measures["instance_seconds"] / 3600 * on_demand_price if on_demand_price else None
        row: dict[str, float | None] = {
            "executions": int(measures["executions"]), "failures": int(measures["failures"]),
            "interruptions": int(measures["interruptions"]), "exec_seconds": round(measures["exec_seconds"], 1),
            "instance_seconds": round(measures["instance_seconds"], 1), "spot_cost_usd": round(measures["cost"], 6),
            "on_demand_cost_usd": None if on_demand is None else round(on_demand, 6),
        }
        per_pool[pool] = row
        for name in ("executions", "failures", "interruptions", "exec_seconds", "instance_seconds"):
            totals[name] += row[name] or 0
        totals["spot_cost_usd"] += measures["cost"]
        totals["on_demand_cost_usd"] += on_demand or 0.0
    finished = job.state in FINISHED_JOB_STATES
    wall = ((job.updated_at if finished else now) - job.created_at).total_seconds()
    exec_seconds = totals["exec_seconds"]
    return {
        "job_id": job.job_id, "state": job.state, "final": finished,
        "tasks": {"total": job.task_count + (1 if job.has_combine else 0),
                  "by_state": {k: v for k, v in job.counts.items() if v}},
        "pools": per_pool,
        "total": {
            "executions": int(totals["executions"]), "failures": int(totals["failures"]),
            "interruptions": int(totals["interruptions"]), "wall_seconds": round(wall, 1),
            "exec_seconds": round(exec_seconds, 1), "instance_seconds": round(totals["instance_seconds"], 1),
            "spot_cost_usd": round(totals["spot_cost_usd"], 6),
            "on_demand_cost_usd": round(totals["on_demand_cost_usd"], 6),
            # against running every task one after another on one instance
            "speedup": round(exec_seconds / wall, 2) if wall > 0 else None,
        },
    }
