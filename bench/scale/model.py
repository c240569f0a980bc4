"""Modeled AWS time of a recorded call sequence: assumed per-request latencies plus EC2's documented
API token buckets. Not measured: the benchmark has no AWS account. Used to say what the measured
(moto) call sequences would take against the real services, and how long Lambda functions run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Assumed in-region round trips (seconds), roughly p50; stated in the results.
LATENCY = {
    ("dynamodb", "GetItem"): 0.004, ("dynamodb", "PutItem"): 0.006, ("dynamodb", "UpdateItem"): 0.006,
    ("dynamodb", "Query"): 0.008, ("dynamodb", "BatchGetItem"): 0.010, ("dynamodb", "BatchWriteItem"): 0.015,
    ("dynamodb", "TransactWriteItems"): 0.030,
    ("sns", "Publish"): 0.015, ("sns", "PublishBatch"): 0.020,
    ("ec2", "RunInstances"): 1.5, ("ec2", "CreateTags"): 0.15, ("ec2", "TerminateInstances"): 0.3,
    ("ec2", "DescribeInstances"): 0.3, ("ec2", "DescribeSpotPriceHistory"): 0.3,
    ("sts", "AssumeRole"): 0.05, ("logs", "CreateLogStream"): 0.02,
}
DEFAULT_LATENCY = 0.010

# EC2 API throttling per account and region (docs: "Request throttling for the Amazon EC2 API"):
# (bucket capacity, refill per second); RunInstances also draws one resource token per instance.
REQUEST_BUCKETS = {"RunInstances": (5, 2.0), "CreateTags": (100, 10.0), "TerminateInstances": (100, 5.0),
                   "DescribeInstances": (100, 20.0)}
RESOURCE_BUCKETS = {"RunInstances": (1000, 2.0), "TerminateInstances": (1000, 20.0)}


@dataclass
class _Bucket:
    capacity: float
    rate: float
    tokens: float
    at: float = 0.0

    def wait(self, now: float, need: float) -> float:
        """Seconds to wait at `now` for `need` tokens (then takes them)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        wait = max(0.0, (need - self.tokens) / self.rate)
        self.tokens += wait * self.rate - need
        self.at = now + wait
        return wait


def latency(service: str, operation: str) -> float:
    return LATENCY.get((service, operation), DEFAULT_LATENCY)


def replay(calls: Iterable[tuple[str, str, int]], full_buckets: bool = True,
           budget_seconds: float = 150.0) -> dict[str, float]:
    """Sequential replay: each call waits for its EC2 tokens (a client that waits exactly as long as
    needed: optimistic next to SDK back-off) and then takes its latency. Also counts the instances
    whose RunInstances call had answered within `budget_seconds` (a function's timeout)."""
    requests = {op: _Bucket(c, r, c if full_buckets else 0) for op, (c, r) in REQUEST_BUCKETS.items()}
    resources = {op: _Bucket(c, r, c if full_buckets else 0) for op, (c, r) in RESOURCE_BUCKETS.items()}
    now = waited = 0.0
    launched_in_budget = 0
    for service, operation, size in calls:
        if service == "ec2":
            wait = 0.0
            if operation in requests:
                wait = requests[operation].wait(now, 1)
            if operation in resources:
                wait = max(wait, resources[operation].wait(now, size))
            now += wait
            waited += wait
        now += latency(service, operation)
        if operation == "RunInstances" and now <= budget_seconds:
            launched_in_budget += size
    return {"seconds": round(now, 2), "waiting_for_ec2_tokens_seconds": round(waited, 2),
            "instances_launched_within_budget": launched_in_budget, "budget_seconds": budget_seconds}
