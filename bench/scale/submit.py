"""Part 1: submitting a 100,000-task problem with `spotrun.jobs.submit_job`.

Measured: wall and CPU time of submit_job (validation, task items, the store's 16-thread
BatchWriteItem fan-out, the job transaction, the SNS messages) and every request it makes.
- on counting fakes: real boto3 DynamoDB and SNS clients configured as the product's (DynamoDB
  without botocore's client-side parameter validation; serialization, signing, parsing: the
  client-side CPU a Lambda pays) whose HTTP send is answered locally, at once
  (the code's own cost) or after a fixed modeled latency per request (the service's round trip; the
  sleep releases the GIL, so the store's writer threads overlap as they would against DynamoDB);
- the same with botocore's client-side parameter validation on (what turning it off saves);
- through the API handler (API Gateway event -> Powertools validation -> submit_job) on the fakes;
- on moto with fewer tasks, to show the real code path stores every task (moto is far slower per
  item than DynamoDB, so its time is not the service's).
Modeled, not measured: request units (from the written items' sizes, see bench.scale.meter), the
time on the API function's Lambda (its memory from spotrun.resources; below 1,769 MB a Lambda gets
less than one vCPU: CPU time x 1769/memory) and DynamoDB's own write limits
for one job (16 index shards x 1,000 WRU/s per partition key; a new on-demand table's 4,000 WRU/s).
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

from bench.scale.meter import CallLog
from bench.scale.plane import fake_plane, job_spec, moto_plane, moto_session
from spotrun import resources
from spotrun.adapters.dynamo import TASK_SHARDS
from spotrun.domain.spec import parse_spec
from spotrun.jobs import submit_job
from spotrun.sweeps import EAGER_TASKS

PARTITION_KEY_WRU_PER_SECOND = 1_000  # DynamoDB's per-partition throughput limit
ON_DEMAND_NEW_TABLE_WRU_PER_SECOND = 4_000  # a new on-demand table's initial write throughput
LAMBDA_FULL_VCPU_MB = 1_769  # Lambda gives one full vCPU at this memory size, proportionally less below
API_MEMORY_MB = resources.function("api").memory_mb
SWEEP_TASKS = 1_000_000


def submit_on_fakes(spec: dict[str, Any], latency_seconds: float, validate: bool = False) -> dict[str, Any]:
    """One submit_job on locally answered clients: times, requests, estimated units of what it wrote."""
    log = CallLog()
    cp, dynamo = fake_plane(log, latency_seconds, validate)
    started, cpu = time.perf_counter(), time.process_time()
    job, created = submit_job(cp, spec, owner="bench")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert created and job.task_count == (len(spec["parameters"]) if "parameters" in spec else spec["tasks"])
    units = dynamo.units()
    tasks = job.task_count
    return {
        "tasks": tasks, "modeled_latency_ms_per_request": latency_seconds * 1000,
        "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "tasks_per_second": round(tasks / wall),
        "modeled_api_lambda_seconds": round(wall + cpu * max(0.0, LAMBDA_FULL_VCPU_MB / API_MEMORY_MB - 1), 1),
        "api_lambda_memory_mb": API_MEMORY_MB,
        "requests": log.counts(),
        "dynamodb_items_written": sum(c.size for c in log.calls if c.operation == "BatchWriteItem"),
        "estimated_wru": {"table": units.wru, "indexes": units.gsi_wru, "per_task": round((units.wru + units.gsi_wru) / tasks, 3)},
        "bytes_written_per_task": round(units.bytes_written / tasks),
    }


def submit_through_api(spec: dict[str, Any]) -> dict[str, Any]:
    """POST /jobs as API Gateway delivers it, on the zero-latency fakes."""
    from spotrun.handlers import api
    from tests.support import LambdaContextStub, api_event

    log = CallLog()
    cp, _ = fake_plane(log, 0.0)
    event = api_event("POST", "/jobs", json.dumps(spec))
    started = time.perf_counter()
    answer = api.handler(event, LambdaContextStub(), control=cp)
    wall = time.perf_counter() - started
    assert answer["statusCode"] == 202, answer["body"][:500]
    return {"wall_seconds": round(wall, 3), "request_body_bytes": len(event["body"]),
            "requests": log.counts()}


def validation_seconds(spec: dict[str, Any]) -> float:
    started = time.perf_counter()
    parse_spec(spec)
    return round(time.perf_counter() - started, 3)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def submit_on_moto(tasks: int) -> dict[str, Any]:
    """The real code path on moto: every task stored, counted back through the by_job index."""
    with moto_session() as session:
        plane = moto_plane(session)
        spec = job_spec(tasks, parameters=True)
        started = time.perf_counter()
        job, created = submit_job(plane.cp, spec, owner="bench")
        wall = time.perf_counter() - started
        raw = plane.raw_dynamo
        stored = sum(
            raw.query(TableName=plane.cp.settings.table, IndexName="by_job", Select="COUNT",
                      KeyConditionExpression="job_pk = :p",
                      ExpressionAttributeValues={":p": {"S": f"{job.job_id}#{shard}"}})["Count"]
            for shard in range(TASK_SHARDS)
        )
        stored_job = plane.cp.store.get_job(job.job_id)
        return {
            "tasks": tasks, "wall_seconds": round(wall, 3), "tasks_per_second": round(tasks / wall),
            "requests": plane.log.counts(),
            "verified": {"tasks_stored": stored, "job_counts": stored_job.counts if stored_job else None,
                         "ok": created and stored == tasks and stored_job is not None
                         and stored_job.counts.get("QUEUED") == tasks},
        }


def throughput_floor(tasks: int, table_wru_per_task: float, index_wru_per_task: float) -> dict[str, Any]:
    """DynamoDB's own write limits for one job's submit (modeled, not measured)."""
    per_index = TASK_SHARDS * PARTITION_KEY_WRU_PER_SECOND  # two indexes, each with 16 keys per job
    return {
        "index_partition_floor_seconds": round(tasks * index_wru_per_task / 2 / per_index, 2),
        "new_on_demand_table_seconds": round(tasks * table_wru_per_task / ON_DEMAND_NEW_TABLE_WRU_PER_SECOND, 1),
        "method": (f"by_state and by_job keys are sharded {TASK_SHARDS} ways per job and one partition key takes at "
                   f"most {PARTITION_KEY_WRU_PER_SECOND} WRU/s, so one job's tasks enter each index at <= {per_index} "
                   f"items/s; a new on-demand table (and each index) starts at {ON_DEMAND_NEW_TABLE_WRU_PER_SECOND} "
                   "WRU/s and scales to twice its previous peak. Throttled items come back as UnprocessedItems, "
                   "which DynamoStore._write_chunk sends again at once, without back-off."),
    }


def run(tasks: int = 100_000, moto_tasks: int = 5_000, latency_ms: float = 10.0) -> dict[str, Any]:
    by_count, by_parameters = job_spec(tasks), job_spec(tasks, parameters=True)
    latency = f"{latency_ms:g}ms"
    rss_before = peak_rss_mib()
    parameters = {"0ms": submit_on_fakes(by_parameters, 0.0)}
    rss_after = peak_rss_mib()
    parameters[latency] = submit_on_fakes(by_parameters, latency_ms / 1000)
    parameters["0ms_with_botocore_parameter_validation"] = submit_on_fakes(by_parameters, 0.0, validate=True)
    fakes = {
        "tasks_count_spec": {"0ms": submit_on_fakes(by_count, 0.0), latency: submit_on_fakes(by_count, latency_ms / 1000)},
        "parameters_spec": parameters,
    }
    modeled = parameters[latency]
    requests = modeled["requests"]
    million = job_spec(SWEEP_TASKS, max_concurrency=2_000)
    return {
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "tasks": tasks,
        "fakes": fakes,
        "validation_seconds": {"tasks_count_spec": validation_seconds(by_count),
                               "parameters_spec": validation_seconds(by_parameters)},
        "api_handler_parameters_spec_0ms": submit_through_api(by_parameters),
        "peak_rss_mib": {"before_first_submit": rss_before, "after_100k_parameters_submit": rss_after},
        "moto": submit_on_moto(moto_tasks),
        "batch_write_calls": requests.get("dynamodb:BatchWriteItem", 0), "expected_batch_write_calls": -(-tasks // 25),
        "per_task_writes": {k: v for k, v in requests.items() if k in ("dynamodb:PutItem", "dynamodb:UpdateItem")},
        # A sweep of a million tasks by count: stored as it is admitted (spotrun.sweeps), so submit writes
        # the job, its first EAGER_TASKS tasks and an event, whatever the count.
        "sweep_1m_tasks": {"0ms": submit_on_fakes(million, 0.0), latency: submit_on_fakes(million, latency_ms / 1000),
                           "api_handler_0ms": submit_through_api(million),
                           "tasks_stored_at_submit": EAGER_TASKS},
        "dynamodb_throughput_floor": throughput_floor(tasks, modeled["estimated_wru"]["table"] / tasks,
                                                      modeled["estimated_wru"]["indexes"] / tasks),
    }
