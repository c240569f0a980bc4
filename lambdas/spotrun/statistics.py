"""A job's statistics: per pool and in total, derived from the counters its transitions keep.

Every ended attempt adds its executions, failures, interruptions, execution and instance seconds and
spot cost to the job item in the same transaction that ends it (see the store), so these figures
agree with the timeline and cost one read, however many tasks the job has.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo import STAT_SEPARATOR
from spotrun.domain.catalog import load_catalog
from spotrun.model import FINISHED_JOB_STATES, Job


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
        row = {
            "executions": int(measures["executions"]), "failures": int(measures["failures"]),
            "interruptions": int(measures["interruptions"]), "exec_seconds": round(measures["exec_seconds"], 1),
            "instance_seconds": round(measures["instance_seconds"], 1), "spot_cost_usd": round(measures["cost"], 6),
            "on_demand_cost_usd": None if on_demand is None else round(on_demand, 6),
        }
        per_pool[pool] = row
        for name in ("executions", "failures", "interruptions", "exec_seconds", "instance_seconds"):
            totals[name] += row[name]
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
