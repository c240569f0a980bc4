"""Part 2: scheduling throughput of one scheduler invocation (`reconcile_job`) on a job with many
queued tasks, caps high enough that only the scheduler's own limit (MAX_ADMIT_PER_RUN) binds.

Measured on moto: wall time of reconcile_job (minus the benchmark's own unit metering), tasks
admitted and launched, EC2 RunInstances / CreateTags calls, DynamoDB requests by operation and
(estimated) request units per admitted task.
Modeled: the same call sequence against AWS (bench.scale.model: assumed latencies, EC2's documented
token buckets), with buckets full (a first burst) and empty (a second large admission soon after).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.scale import model
from bench.scale.meter import CallLog
from bench.scale.plane import job_spec, moto_plane, moto_session
from spotrun import resources
from spotrun.domain.model import TaskState
from spotrun.jobs import submit_job
from spotrun.scheduling import ADMISSION_CHUNK, MAX_ADMIT_PER_RUN, reconcile_job
from spotrun.sweeps import EAGER_TASKS


def run(tasks: int = 2_500, cap: int = 2_000) -> dict[str, Any]:
    with moto_session() as session:
        plane = moto_plane(session, metered=True, account_max=cap, pool_max=cap, wide_subnets=True)
        cp = plane.cp
        job, _ = submit_job(cp, job_spec(tasks, max_concurrency=cap), owner="bench")
        log = plane.use(CallLog(actor="scheduler"))
        plane.dynamo.metering_seconds = 0.0
        started = time.perf_counter()
        report = reconcile_job(cp, job.job_id)
        wall = time.perf_counter() - started - plane.dynamo.metering_seconds
        launching = cp.store.tasks_in_state(job.job_id, TaskState.LAUNCHING, cap)
        after = cp.store.get_job(job.job_id)
        account = cp.store.account_active()

    admitted = report.admitted
    counts = log.counts()
    dynamo = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dynamodb:")}
    units = log.total_units()
    calls = [(c.service, c.operation, c.size) for c in log.calls]
    timeout = resources.function("scheduler").timeout_seconds
    burst, sustained = model.replay(calls, budget_seconds=timeout), model.replay(calls, False, timeout)
    return {
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "setup": {"queued_tasks": tasks, "max_concurrency": cap, "account_max_instances": cap, "pool_max_instances": cap,
                  "pools": 6, "subnets": "/18 per zone", "max_admit_per_run": MAX_ADMIT_PER_RUN, "admission_chunk": ADMISSION_CHUNK,
                  # a sweep by count stores its first EAGER_TASKS tasks at submit, the rest as they are admitted
                  "stored_at_submit": min(tasks, EAGER_TASKS)},
        "admitted": admitted, "launched": report.launched,
        "tasks_per_pool": dict(Counter(t.pool for t in launching)),
        "moto_wall_seconds": round(wall, 2), "moto_tasks_admitted_per_second": round(admitted / wall, 1),
        "ec2": {"RunInstances": counts.get("ec2:RunInstances", 0), "CreateTags": counts.get("ec2:CreateTags", 0),
                "instances_per_RunInstances": round(report.launched / max(1, counts.get("ec2:RunInstances", 0)), 1),
                "CreateTags_per_task": round(counts.get("ec2:CreateTags", 0) / max(1, report.launched), 2)},
        "dynamodb_requests": dynamo,
        "dynamodb_requests_per_admitted_task": round(sum(dynamo.values()) / admitted, 2),
        "dynamodb_requests_per_admitted_task_by_operation": {k: round(v / admitted, 3) for k, v in dynamo.items()},
        "estimated_units_per_admitted_task": {"wru": round(units.wru / admitted, 2), "gsi_wru": round(units.gsi_wru / admitted, 2),
                                              "rru": round(units.rru / admitted, 2)},
        "sns_requests": {k: v for k, v in counts.items() if k.startswith("sns:")},
        "verified": {"job_active": after.active if after else None, "account_active": account,
                     "ok": after is not None and after.active == admitted == account == report.launched},
        "modeled_on_aws": {
            "latencies_seconds": {f"{s}:{o}": v for (s, o), v in model.LATENCY.items() if s in ("dynamodb", "ec2", "sns")},
            "ec2_buckets": {"request": model.REQUEST_BUCKETS, "resource": model.RESOURCE_BUCKETS},
            "first_burst": {**burst, "tasks_admitted_per_second": round(admitted / burst["seconds"], 1)},
            "buckets_empty": {**sustained, "tasks_admitted_per_second": round(admitted / sustained["seconds"], 1)},
            "scheduler_timeout_seconds": timeout,
            "fits_in_timeout": burst["seconds"] < timeout,
        },
    }
