"""Part 4: the control plane's AWS bill per 1,000 tasks and per 1,000 instance-hours, from the
request counts measured in part 3 (the large job's steady state) and list prices.

Everything here is a model: the counts and units come from the lifecycle run, the prices and the
assumptions below are stated in the results. Two delivery cases bound the SQS and Lambda request
counts: 'one_per_message' (light load: each message is received, deleted and handled alone) and
'full_batches' (busy: 10 messages per ReceiveMessage and DeleteMessageBatch, Lambda batches of 10
messages). A third, 'windowed_20_instances', follows the stack's batching windows (spotrun.resources)
at a small steady load: 20 instances, so a queue whose event source waits W seconds hands its function
1 + (20 x its messages per instance and second) x W messages per invocation (at most its batch size);
each message is still received alone (sparse messages end a long poll one by one) and each
invocation's messages are deleted 10 per DeleteMessageBatch. (No queue has a window since heartbeats
stopped being messages: the agent writes its beat to DynamoDB itself, the same in every case.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from bench.scale.lifecycle import QUEUE_FUNCTION
from bench.scale.model import latency
from spotrun import resources
from spotrun.adapters.sts import SESSION_SECONDS

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
    "control_poll_seconds": "30: the agent reads its task's desired state twice per heartbeat (one eventually "
                            "consistent GetItem each)",
    "checkpoint_interval_seconds": 600,  # the agent's 'auto' interval with its defaults (Young, 5 s cost, 0.1/h)
    "task_lengths_seconds": {"1 minute": 60, "10 minutes": 600, "1 hour": 3600},
    "heartbeats_per_task": "ceil(task length / heartbeat interval): the agent beats when the program starts",
    "checkpoints_per_task": "floor(task length / checkpoint interval): each the agent's read of its pointer and "
                            "a `checkpoint` worker-route call",
    "worker_routes": "the agent's calls (session at boot, claim, checkpoint, next, renewals) invoke the worker-api "
                     "function through its function URL (IAM auth): a Lambda invocation, no API Gateway request; "
                     "traced only if the function is",
    "credential_renewals_per_task": f"floor(task length / {SESSION_SECONDS - 900} s): botocore renews the "
                                    f"{SESSION_SECONDS} s task credentials 15 minutes before they end, by a "
                                    "`session` call",
    "sqs_enqueues": "every message delivered to a queue is one request, also those SNS and EventBridge send",
    "sns_to_sqs_and_eventbridge_delivery": "free (SNS deliveries to SQS; EC2 events on the default bus)",
    "lambda_duration": "sum of the modeled latencies of the function's own AWS calls + 10 ms per invocation",
    "lambda_logs": "measured structured log bytes + 0.4 KB of platform lines and 0.6 KB of EMF metrics per invocation",
    "heartbeat": "the agent's own conditional UpdateItem of its task item's beat (units from the item's size "
                 "before and after) and its two reads of its desired state per interval: no message, no invocation",
    "xray": "active tracing, default sampling: at light load (one_per_message, windowed) the 1/s reservoir "
            "traces every invocation, busy (full_batches) 5%",
    "scheduler_reconciles": "one reconcile per task completion (no coalescing of completions in one SQS batch)",
    "reaper": "a sweep a minute: 3 eventually consistent item reads per running instance, batched 100 per "
              "BatchGetItem (its worker and task for the orphan check, its task from the live index), a reconcile "
              "per open job, the idle sweep in the fixed monthly cost",
    "not_counted": "EC2 API calls (free), DynamoDB storage/PITR and SQS/SNS data transfer (small), users' own "
                   "GET /jobs polling",
}
INVOCATION_OVERHEAD_SECONDS = 0.010
# The stack's alarms, counted per metric each watches (what CloudWatch bills; a metric-math alarm pays for
# each metric in its expression): one per function's errors, one per dead-letter queue, the operators' own
# (stacks/constructs/observability.py). tests/infrastructure checks the count against the template.
ALARM_METRICS = 19
RENEWAL_SECONDS = SESSION_SECONDS - 900  # botocore's refreshable credentials renew 15 minutes ahead
PLATFORM_LOG_BYTES, EMF_LOG_BYTES = 400, 600
XRAY_SAMPLED = 0.05
LAMBDA_BATCH = {"scheduler": 10, "reports": 10, "interruptions": 10}
DELIVERY_CASES = ("one_per_message", "windowed_20_instances", "full_batches")


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
    traces: float = 0.0  # X-Ray traces recorded

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
            "xray": self.traces * p["xray_per_million_traces"] / 1e6,
        }
        out["total"] = sum(out.values())
        return out


LIGHT_LOAD_INSTANCES = 20


@dataclass(frozen=True)
class Delivery:
    """How a delivery case hands a queue's messages to its function."""

    name: str
    heartbeat_seconds: float = 60.0

    def per_invocation(self, queue: str) -> float:
        if self.name == "one_per_message":
            return 1.0
        if self.name == "full_batches":
            return LAMBDA_BATCH[queue]
        definition = resources.queue(queue)
        rate = 0.0  # per instance and second: every queue's messages are rare (a few per task)
        return min(definition.batch_size, 1 + rate * definition.max_batching_window_seconds)

    @property
    def traced_share(self) -> float:
        """Invocations X-Ray traces: at light load its reservoir (a request a second) takes every one."""
        return XRAY_SAMPLED if self.name == "full_batches" else 1.0

    def sqs_requests_per_message(self, queue: str) -> float:
        """Its enqueue, its share of a ReceiveMessage and of a DeleteMessageBatch."""
        if self.name == "full_batches":
            return 1 + 2 / 10
        batch = self.per_invocation(queue)
        return 1 + 1 + math.ceil(batch / 10) / batch


def phase_bill(phase: dict[str, Any], memory_mb: dict[str, int], delivery: Delivery) -> Bill:
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
        bill.sqs += messages * delivery.sqs_requests_per_message(queue)  # enqueue + ReceiveMessage + DeleteMessageBatch
        invocations = messages / delivery.per_invocation(queue)
        bill = bill + _invocations(invocations, memory_mb[QUEUE_FUNCTION[queue]], QUEUE_FUNCTION[queue], delivery)
    for direct in ("api", "worker-api", "reaper"):
        if direct in phase["by_actor"]:
            bill = bill + _invocations(phase["by_actor"][direct]["invocations"], memory_mb[direct], direct, delivery)
    # Only the users' API is behind API Gateway; the worker routes are the worker-api function's own URL.
    bill.api += phase["by_actor"].get("api", {}).get("invocations", 0)
    return bill


def _invocations(n: float, memory_mb: int, function: str, delivery: Delivery) -> Bill:
    traced = delivery.traced_share if resources.function(function).traced else 0.0
    return Bill(lambda_requests=n, gb_seconds=n * INVOCATION_OVERHEAD_SECONDS * memory_mb / 1024,
                log_bytes=n * (PLATFORM_LOG_BYTES + EMF_LOG_BYTES), traces=n * traced)


def estimate(lifecycle: dict[str, Any]) -> dict[str, Any]:
    steady, idle = lifecycle["large_job_steady_state"], lifecycle["one_task_job"]
    phases, memory = steady["phases"], lifecycle["function_memory_mb"]
    # Each minute the reaper reads, for every running instance, its WORKER and TASK items (orphan check)
    # and, once the task is older than the stale threshold, the task again from the live index (heartbeats
    # do not move its key): three eventually consistent reads (< 4 KB), 100 keys per BatchGetItem.
    per_instance_minute = Bill(rru=1.5, gb_seconds=3 * latency("dynamodb", "BatchGetItem") / 100 * memory["reaper"] / 1024)
    alone = Delivery("one_per_message")
    idle_sweep = phase_bill(idle["phases"]["reaper_sweep"], memory, alone)
    open_job_sweep = (phase_bill(phases["reaper_sweep"], memory, alone) + idle_sweep * -1
                      + per_instance_minute * -steady["active_instances_during_sweep"])

    results: dict[str, Any] = {}
    for case in DELIVERY_CASES:
        results[case] = {}
        for beat in ASSUMPTIONS["heartbeat_seconds"].values():
            delivery = Delivery(case, beat)
            bills = {name: phase_bill(phase, memory, delivery) for name, phase in phases.items()}
            submit_share = bills["submit"] * (1 / steady["tasks"])
            per_task_fixed = {
                # every task on a new instance: launch, boot and claim, completion, termination, the next admission
                "new_instance_per_task": submit_share + bills["boot_and_claim"] + bills["completion"],
                # the default: a finished agent takes its job's next queued task (no launch, no boot)
                "instance_reuse": submit_share + bills["completion_with_reuse"],
            }
            for mode, once in per_task_fixed.items():
                rows = {}
                for length_name, length in ASSUMPTIONS["task_lengths_seconds"].items():
                    task = (once + bills["heartbeat"] * math.ceil(length / beat)
                            + bills["checkpoint"] * math.floor(length / ASSUMPTIONS["checkpoint_interval_seconds"])
                            + bills["credential_renewal"] * math.floor(length / RENEWAL_SECONDS)
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
    heartbeat = phase_bill(phases["heartbeat"], memory, alone)
    index_writes = sum(used["dynamodb_units"]["gsi_wru"] for used in phases["heartbeat"]["by_actor"].values())
    return {
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "prices": PRICES, "compute_prices_per_hour": COMPUTE, "assumptions": ASSUMPTIONS,
        "windowed_light_load": {
            "instances": LIGHT_LOAD_INSTANCES,
            "batching_window_seconds": {q.key: q.max_batching_window_seconds for q in resources.QUEUES},
            "messages_per_invocation_heartbeat_60s": {q.key: round(Delivery("windowed_20_instances").per_invocation(q.key), 2)
                                                      for q in resources.QUEUES},
        },
        "per_heartbeat_usd": {"one_per_message": _usd(heartbeat),
                              "windowed_20_instances": _usd(phase_bill(phases["heartbeat"], memory,
                                                                       Delivery("windowed_20_instances"))),
                              "full_batches": _usd(phase_bill(phases["heartbeat"], memory, Delivery("full_batches"))),
                              "one_per_message_without_index_writes": _usd(heartbeat + Bill(wru=-index_writes))},
        "per_task_fixed_part_usd": {
            "submit_share": _usd(phase_bill(phases["submit"], memory, alone) * (1 / steady["tasks"])),
            "boot_and_claim": _usd(phase_bill(phases["boot_and_claim"], memory, alone)),
            "completion_and_next_admission": _usd(phase_bill(phases["completion"], memory, alone)),
            "completion_and_next_task_on_the_same_instance": _usd(phase_bill(phases["completion_with_reuse"], memory, alone)),
            "checkpoint_commit": _usd(phase_bill(phases["checkpoint"], memory, alone)),
            "credential_renewal": _usd(phase_bill(phases["credential_renewal"], memory, alone)),
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
    idle long polls (5 pollers per queue x 3 queues, 20 s polls), the alarms ($0.10 a month per metric they
    watch), the dashboard (free within
    an account's first 3), the topics' key, and the handlers' ~19 custom metrics (EMF; $0.30 a metric
    a month, prorated by the hours they are sent)."""
    minutes = 30 * 24 * 60
    out: dict[str, Any] = {
        "reaper_idle_sweeps": round((idle_sweep * minutes).dollars()["total"], 2),
        "sqs_idle_long_polls": round(len(resources.QUEUES) * 5 * 3 * minutes * PRICES["sqs_per_million_requests"] / 1e6,
                                     2),
        "cloudwatch_alarms": round(ALARM_METRICS * 0.10, 2),
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
