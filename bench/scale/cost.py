"""Part 4: the control plane's AWS bill per 1,000 tasks and per 1,000 instance-hours, from the
request counts measured in part 3 (the large job's steady state) and list prices.

Everything here is a model: the counts and units come from the lifecycle run, the prices and the
assumptions below are stated in the results. Two delivery cases bound the SQS and Lambda request
counts: 'one_per_message' (light load: each message is received, deleted and handled alone) and
'full_batches' (busy: 10 messages per ReceiveMessage and DeleteMessageBatch, Lambda batches of 100
heartbeats or 10 other messages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from bench.scale.lifecycle import QUEUE_FUNCTION
from bench.scale.model import latency

# us-east-1 list prices (USD), after the free tiers.
PRICES = {
    "dynamodb_per_million_wru": 0.625,  # on-demand, after the November 2024 price cut
    "dynamodb_per_million_rru": 0.125,
    "sqs_per_million_requests": 0.40,  # standard queues; one request per 64 KB chunk
    "sns_per_million_publishes": 0.50,  # a PublishBatch of up to 10 messages assumed one request (per 64 KB)
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second": 0.0000166667,  # x86
    "api_gateway_rest_per_million": 3.50,
    "cloudwatch_logs_per_gb_ingested": 0.50,
    "xray_per_million_traces": 5.00,
    "s3_per_thousand_put_list": 0.005,
    "public_ipv4_per_hour": 0.005,
}
COMPUTE = {  # spot $/h of the instances being managed (assumed typical prices)
    "c6i.large spot": 0.035,
    "g5.xlarge spot": 0.40,
}
ASSUMPTIONS = {
    "heartbeat_seconds": {"agent_default": 60, "twice_as_often": 30},
    "control_poll_seconds": "30: the agent reads its task's desired state twice per heartbeat (one GetItem each)",
    "checkpoint_interval_seconds": 600,  # the agent's 'auto' interval with its defaults (Young, 5 s cost, 0.1/h)
    "task_lengths_seconds": {"1 minute": 60, "10 minutes": 600, "1 hour": 3600},
    "heartbeats_per_task": "ceil(task length / heartbeat interval): the agent beats when the program starts",
    "checkpoints_per_task": "floor(task length / checkpoint interval)",
    "sqs_enqueues": "every message delivered to a queue is one request, also those SNS and EventBridge send",
    "sns_to_sqs_and_eventbridge_delivery": "free (SNS deliveries to SQS; EC2 events on the default bus)",
    "lambda_duration": "sum of the modeled latencies of the function's own AWS calls + 10 ms per invocation",
    "lambda_logs": "measured structured log bytes + 0.4 KB of platform lines and 0.6 KB of EMF metrics per invocation",
    "xray": "active tracing, default sampling: 5% of invocations (at low rates the 1/s reservoir traces more)",
    "scheduler_reconciles": "one reconcile per task completion (no coalescing of completions in one SQS batch)",
    "reaper": "a sweep a minute: 3 eventually consistent item reads per running instance, batched 100 per "
              "BatchGetItem (its worker and task for the orphan check, its task from the live index), a reconcile "
              "per open job, the idle sweep in the fixed monthly cost",
    "not_counted": "EC2 API calls (free), DynamoDB storage/PITR and SQS/SNS data transfer (small), users' own "
                   "GET /jobs polling",
}
INVOCATION_OVERHEAD_SECONDS = 0.010
PLATFORM_LOG_BYTES, EMF_LOG_BYTES = 400, 600
XRAY_SAMPLED = 0.05
LAMBDA_BATCH = {"heartbeats": 100, "scheduler": 10, "reports": 10, "interruptions": 10}


@dataclass
class Bill:
    """Requests and units of something (a phase, a task, an instance-hour)."""

    wru: float = 0.0
    rru: float = 0.0
    sqs: float = 0.0
    sns: float = 0.0
    lambda_requests: float = 0.0
    gb_seconds: float = 0.0
    api: float = 0.0
    log_bytes: float = 0.0

    def __add__(self, other: Bill) -> Bill:
        return Bill(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, k: float) -> Bill:
        return Bill(*(getattr(self, f.name) * k for f in fields(self)))

    def dollars(self) -> dict[str, float]:
        p = PRICES
        out = {
            "dynamodb": self.wru * p["dynamodb_per_million_wru"] / 1e6 + self.rru * p["dynamodb_per_million_rru"] / 1e6,
            "sqs": self.sqs * p["sqs_per_million_requests"] / 1e6,
            "sns": self.sns * p["sns_per_million_publishes"] / 1e6,
            "lambda": self.lambda_requests * p["lambda_per_million_requests"] / 1e6 + self.gb_seconds * p["lambda_per_gb_second"],
            "api_gateway": self.api * p["api_gateway_rest_per_million"] / 1e6,
            "cloudwatch_logs": self.log_bytes / 2**30 * p["cloudwatch_logs_per_gb_ingested"],
            "xray": self.lambda_requests * XRAY_SAMPLED * p["xray_per_million_traces"] / 1e6,
        }
        out["total"] = sum(out.values())
        return out


def phase_bill(phase: dict[str, Any], memory_mb: dict[str, int], batched: bool) -> Bill:
    """What one phase of the lifecycle costs, its queue deliveries priced for the delivery case."""
    bill = Bill()
    for actor, used in phase["by_actor"].items():
        requests = used["requests"]
        bill.wru += used["dynamodb_units"]["wru"] + used["dynamodb_units"]["gsi_wru"]
        bill.rru += used["dynamodb_units"]["rru"]
        bill.sns += requests.get("sns:Publish", 0) + requests.get("sns:PublishBatch", 0)
        if actor in memory_mb:  # a function (the agent and the client are not)
            bill.gb_seconds += memory_mb[actor] / 1024 * used["modeled_call_seconds"]
            bill.log_bytes += used["log_bytes"]
    for queue, messages in phase["queue_messages"].items():
        per_receive = 10 if batched else 1
        bill.sqs += messages * (1 + 2 / per_receive)  # enqueue + ReceiveMessage + DeleteMessageBatch
        invocations = messages / (LAMBDA_BATCH[queue] if batched else 1)
        bill = bill + _invocations(invocations, memory_mb[QUEUE_FUNCTION[queue]])
    for direct in ("api", "reaper"):
        if direct in phase["by_actor"]:
            bill = bill + _invocations(phase["by_actor"][direct]["invocations"], memory_mb[direct])
    bill.api += phase["by_actor"].get("api", {}).get("invocations", 0)
    return bill


def _invocations(n: float, memory_mb: int) -> Bill:
    return Bill(lambda_requests=n, gb_seconds=n * INVOCATION_OVERHEAD_SECONDS * memory_mb / 1024,
                log_bytes=n * (PLATFORM_LOG_BYTES + EMF_LOG_BYTES))


def estimate(lifecycle: dict[str, Any]) -> dict[str, Any]:
    steady, idle = lifecycle["large_job_steady_state"], lifecycle["one_task_job"]
    phases, memory = steady["phases"], lifecycle["function_memory_mb"]
    # Each minute the reaper reads, for every running instance, its WORKER and TASK items (orphan check)
    # and, once the task is older than the stale threshold, the task again from the live index (heartbeats
    # do not move its key): three eventually consistent reads (< 4 KB), 100 keys per BatchGetItem.
    per_instance_minute = Bill(rru=1.5, gb_seconds=3 * latency("dynamodb", "BatchGetItem") / 100 * memory["reaper"] / 1024)
    idle_sweep = phase_bill(idle["phases"]["reaper_sweep"], memory, False)
    open_job_sweep = (phase_bill(phases["reaper_sweep"], memory, False) + idle_sweep * -1
                      + per_instance_minute * -steady["active_instances_during_sweep"])

    results: dict[str, Any] = {}
    for case in ("one_per_message", "full_batches"):
        bills = {name: phase_bill(phase, memory, case == "full_batches") for name, phase in phases.items()}
        submit_share = bills["submit"] * (1 / steady["tasks"])
        per_task_fixed = {
            # every task on a new instance: launch, boot and claim, completion, termination, the next admission
            "new_instance_per_task": submit_share + bills["boot_and_claim"] + bills["completion"],
            # the default: a finished agent takes its job's next queued task (no launch, no boot)
            "instance_reuse": submit_share + bills["completion_with_reuse"],
        }
        results[case] = {}
        for mode, once in per_task_fixed.items():
            for beat in ASSUMPTIONS["heartbeat_seconds"].values():
                rows = {}
                for length_name, length in ASSUMPTIONS["task_lengths_seconds"].items():
                    task = (once + bills["heartbeat"] * math.ceil(length / beat)
                            + bills["checkpoint"] * math.floor(length / ASSUMPTIONS["checkpoint_interval_seconds"])
                            + per_instance_minute * (length / 60))
                    per_task = task.dollars()
                    per_1000h = per_task["total"] * 1000 * 3600 / length
                    rows[length_name] = {
                        "per_1000_tasks_usd": {k: round(v * 1000, 4) for k, v in per_task.items()},
                        "per_1000_instance_hours_usd": round(per_1000h, 3),
                        "percent_of_compute": {name: round(100 * per_1000h / (1000 * price), 3)
                                               for name, price in COMPUTE.items()},
                    }
                results[case].setdefault(mode, {})[f"heartbeat_{beat}s"] = rows
    heartbeat = phase_bill(phases["heartbeat"], memory, False)
    index_writes = phases["heartbeat"]["by_actor"]["heartbeat"]["dynamodb_units"]["gsi_wru"]
    return {
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "prices": PRICES, "compute_prices_per_hour": COMPUTE, "assumptions": ASSUMPTIONS,
        "per_heartbeat_usd": {"one_per_message": _usd(heartbeat),
                              "full_batches": _usd(phase_bill(phases["heartbeat"], memory, True)),
                              "one_per_message_without_index_writes": _usd(heartbeat + Bill(wru=-index_writes))},
        "per_task_fixed_part_usd": {
            "submit_share": _usd(phase_bill(phases["submit"], memory, False) * (1 / steady["tasks"])),
            "boot_and_claim": _usd(phase_bill(phases["boot_and_claim"], memory, False)),
            "completion_and_next_admission": _usd(phase_bill(phases["completion"], memory, False)),
            "completion_and_next_task_on_the_same_instance": _usd(phase_bill(phases["completion_with_reuse"], memory, False)),
            "checkpoint_commit": _usd(phase_bill(phases["checkpoint"], memory, False)),
        },
        "reaper_usd": {"per_running_instance_hour": _usd(per_instance_minute * 60)["total"],
                       "per_open_job_hour": _usd(open_job_sweep * 60)["total"]},
        "by_case": results,
        "fixed_per_month_usd": fixed_per_month(idle_sweep),
        "outside_the_control_plane": outside(),
    }


def _usd(bill: Bill) -> dict[str, float]:
    return {k: float(f"{v:.3g}") for k, v in bill.dollars().items() if v}


def fixed_per_month(idle_sweep: Bill) -> dict[str, Any]:
    """What a deployment costs with nothing to do: the reaper's sweep a minute, the event sources'
    idle long polls (5 pollers per queue x 4 queues, 20 s polls), 10 alarms, the dashboard (free within
    an account's first 3), the topics' key, and the handlers' ~19 custom metrics (EMF; $0.30 a metric
    a month, prorated by the hours they are sent)."""
    minutes = 30 * 24 * 60
    out: dict[str, Any] = {
        "reaper_idle_sweeps": round((idle_sweep * minutes).dollars()["total"], 2),
        "sqs_idle_long_polls": round(4 * 5 * 3 * minutes * PRICES["sqs_per_million_requests"] / 1e6, 2),
        "cloudwatch_alarms": 10 * 0.10,
        "cloudwatch_dashboard": 3.00,
        "kms_customer_key": 1.00,
        "cloudwatch_custom_metrics": round(19 * 0.30, 2),
    }
    out["total"] = round(sum(out.values()), 2)
    return out


def outside() -> dict[str, Any]:
    """Costs the design causes outside the control plane (not in the percentages above)."""
    checkpoint_requests = 7 + 2 + 1 + 1  # 50 MiB in 8 MiB parts, create+complete, manifest PUT, LIST
    per_hour = 3600 / ASSUMPTIONS["checkpoint_interval_seconds"] * checkpoint_requests * PRICES["s3_per_thousand_put_list"] / 1000
    return {
        "s3_checkpoint_requests_per_1000_instance_hours_usd": round(1000 * per_hour, 3),
        "s3_note": "a 50 MiB checkpoint every 600 s: 11 PUT/LIST-class requests each (storage and GETs not counted)",
        "public_ipv4_per_1000_instance_hours_usd": 1000 * PRICES["public_ipv4_per_hour"],
        "public_ipv4_percent_of_compute": {n: round(100 * PRICES["public_ipv4_per_hour"] / p, 1) for n, p in COMPUTE.items()},
    }
