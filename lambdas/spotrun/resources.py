"""The control plane's wiring, declared once.

The CDK stack (`stacks/`) and the local runtime both build from these declarations, so the queues,
subscriptions, event patterns and handlers that run locally are the ones that get deployed; a test
compares the synthesized template with this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotrun.domain.interruptions import INSTANCE_ENDING_STATES

# Message attribute that routes control messages (SNS filter policies match on it).
MESSAGE_TYPE_ATTRIBUTE = "type"
# Custom metrics (Powertools EMF, namespace "spotrun", dimension service=spotrun) the stack alarms on.
METRICS_NAMESPACE = "spotrun"
METRICS_SERVICE = "spotrun"
# A worker image found unable to run a checkpoint method (spotrun.images): once per image and method.
WORKER_IMAGE_FAULTS_METRIC = "WorkerImageFaults"


class MessageType:
    """Types of messages on the control topic."""

    JOB_SUBMITTED = "JobSubmitted"
    TASKS_RUNNABLE = "TasksRunnable"  # tasks went (back) to QUEUED: requeue, resume
    CAPACITY_FREED = "CapacityFreed"  # an attempt ended: a slot may be free for queued work
    JOB_CONTROL = "JobControl"  # the user asked to cancel, suspend or resume


class EnvVar:
    """Environment variable names the functions and the agent read their wiring from."""

    TABLE = "SPOTRUN_TABLE"
    BUCKET = "SPOTRUN_BUCKET"
    CONTROL_TOPIC_ARN = "SPOTRUN_CONTROL_TOPIC_ARN"
    NOTIFY_TOPIC_ARN = "SPOTRUN_NOTIFY_TOPIC_ARN"
    REPORT_QUEUE_URL = "SPOTRUN_REPORT_QUEUE_URL"
    LAUNCH_TEMPLATE_ID = "SPOTRUN_LAUNCH_TEMPLATE_ID"
    # JSON object: availability zone -> subnet id the workers launch into.
    SUBNETS = "SPOTRUN_SUBNETS"
    # JSON object: availability zone -> the cluster placement group gangs with `placement: cluster` use.
    PLACEMENT_GROUPS = "SPOTRUN_PLACEMENT_GROUPS"
    # JSON list of instance types the broker may choose from (the pool catalogue).
    INSTANCE_TYPES = "SPOTRUN_INSTANCE_TYPES"
    ACCOUNT_MAX_INSTANCES = "SPOTRUN_ACCOUNT_MAX_INSTANCES"
    POOL_MAX_INSTANCES = "SPOTRUN_POOL_MAX_INSTANCES"
    # Seconds without a heartbeat before the reaper asks EC2 whether a worker is alive.
    HEARTBEAT_STALE_SECONDS = "SPOTRUN_HEARTBEAT_STALE_SECONDS"
    LAUNCH_STALE_SECONDS = "SPOTRUN_LAUNCH_STALE_SECONDS"
    RELAUNCH_SECONDS = "SPOTRUN_RELAUNCH_SECONDS"
    CANCEL_GRACE_SECONDS = "SPOTRUN_CANCEL_GRACE_SECONDS"
    # Workers: the task role their credentials are sessions of, the instance role allowed to ask for them,
    # the worker routes' base URL (the agent's), and the task role's unique id (SQS SenderId prefix).
    TASK_ROLE_ARN = "SPOTRUN_TASK_ROLE_ARN"
    INSTANCE_ROLE_NAME = "SPOTRUN_INSTANCE_ROLE_NAME"
    WORKER_API_URL = "SPOTRUN_WORKER_API_URL"
    TASK_ROLE_ID = "SPOTRUN_TASK_ROLE_ID"
    # The AMI the launch template boots workers from (worker image faults are keyed by it).
    WORKER_IMAGE_ID = "SPOTRUN_WORKER_IMAGE_ID"
    # The agent: where the boot check wrote what the image can run (spotrun_worker.bootcheck).
    IMAGE_CHECK = "SPOTRUN_IMAGE_CHECK"
    # The Secrets Manager secret whose value keys the HMAC of the API's page tokens (the API function's).
    PAGE_KEY_ARN = "SPOTRUN_PAGE_KEY_ARN"
    # The log group of the attempts' logs: the agent writes a stream per attempt (spotrun.access.log_stream).
    TASK_LOG_GROUP = "SPOTRUN_TASK_LOG_GROUP"
    # Endpoint override for every AWS client (the local runtime points it at moto's server).
    AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"


@dataclass(frozen=True)
class TableIndex:
    name: str
    partition_key: str
    sort_key: str
    # Keys only: an update of an attribute no index projects (heartbeats, progress, job counts)
    # writes no index at all; readers fetch the items by key (BatchGetItem).
    projection: str = "KEYS_ONLY"


@dataclass(frozen=True)
class TableDef:
    partition_key: str = "pk"
    sort_key: str = "sk"
    indexes: tuple[TableIndex, ...] = ()
    ttl_attribute: str = "expires_at"


# One table, items keyed by entity (see spotrun.adapters.dynamo.keys for the key layout).
TABLE = TableDef(
    indexes=(
        # Tasks of a job by state, sharded so 100,000 tasks do not share one partition.
        TableIndex("by_state", "state_pk", "state_sk"),
        # All tasks of a job in index order, sharded the same way.
        TableIndex("by_job", "job_pk", "job_sk"),
        # Jobs newest first (sparse: only job items carry it).
        TableIndex("jobs_by_time", "list_pk", "list_sk"),
        # Attempts in flight by last sign of life (sparse, sharded): what the reaper sweeps.
        TableIndex("live", "live_pk", "live_sk"),
    )
)


@dataclass(frozen=True)
class QueueDef:
    key: str
    consumer: str  # key of the function in FUNCTIONS that reads it
    visibility_timeout_seconds: int
    batch_size: int
    max_batching_window_seconds: int = 0
    max_receive_count: int = 5  # then the message moves to the queue's dead-letter queue


@dataclass(frozen=True)
class SubscriptionDef:
    topic: str
    queue: str
    message_types: tuple[str, ...]

    def filter_policy(self) -> dict[str, list[str]]:
        return {MESSAGE_TYPE_ATTRIBUTE: list(self.message_types)}


@dataclass(frozen=True)
class RuleDef:
    key: str
    queue: str
    pattern: dict[str, Any]


@dataclass(frozen=True)
class FunctionDef:
    key: str
    handler: str  # module:function below lambdas/
    description: str
    timeout_seconds: int = 60
    memory_mb: int = 512
    schedule_minutes: int | None = None
    # At most this many invocations at once (reserved concurrency); a scheduled function with 1 never
    # overlaps itself, and an invocation that finds it busy is dropped, not queued (the next one comes).
    reserved_concurrency: int | None = None
    # What the function may touch; the stack turns these into least-privilege grants.
    grants: tuple[str, ...] = field(default_factory=tuple)
    invoked_by: str | None = None  # API, WORKER_ROUTES or DASHBOARD (None: its queue or schedule only)
    # X-Ray active tracing. At light load X-Ray's reservoir (a request a second) traces every invocation, at
    # $5 per million traces: a function invoked per worker call passes traces through instead (worker-api).
    traced: bool = True


# control: messages to the scheduler; notifications: job events for users; operations: alarms for operators
# (a subscriber to job events is not paged for a handler error).
TOPICS = ("control", "notifications", "operations")

# AWS's guidance for an SQS event source: a visibility timeout of at least six times the function's timeout
# (plus the batching window), so a batch Lambda retries while throttled does not count its receives toward
# maxReceiveCount and reach the dead-letter queue unprocessed. The stack refuses less (`VISIBILITY_FACTOR`).
VISIBILITY_FACTOR = 6
QUEUES = (
    QueueDef("scheduler", consumer="scheduler", visibility_timeout_seconds=900, batch_size=10),
    QueueDef("reports", consumer="finisher", visibility_timeout_seconds=600, batch_size=10),
    QueueDef("interruptions", consumer="interruption", visibility_timeout_seconds=600, batch_size=10),
)

SUBSCRIPTIONS = (
    SubscriptionDef(
        "control",
        "scheduler",
        (MessageType.JOB_SUBMITTED, MessageType.TASKS_RUNNABLE, MessageType.CAPACITY_FREED, MessageType.JOB_CONTROL),
    ),
)

RULES = (
    RuleDef(
        "ec2-instance-events",
        "interruptions",
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"],
        },
    ),
    # Only the states that end an instance, and of those only the first of each pair (shutting-down before
    # terminated, stopping before stopped): pending and running mean nothing to the handler, and each would
    # be a queue message and an invocation for every instance launched.
    RuleDef(
        "ec2-instance-ended",
        "interruptions",
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": sorted(INSTANCE_ENDING_STATES)},
        },
    ),
    RuleDef(
        "health-scheduled-changes",
        "interruptions",
        {
            "source": ["aws.health"],
            "detail-type": ["AWS Health Event"],
            "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
        },
    ),
)

# How a function is invoked besides its queues and schedule: behind the users' API, through its own function
# URL (the worker routes), or by CloudWatch dashboards' custom widgets (with the viewer's own credentials).
API, WORKER_ROUTES, DASHBOARD = "api", "worker-routes", "dashboard"
WORKER_API_CONCURRENCY = 100

FUNCTIONS = (
    FunctionDef(
        "api", "spotrun.handlers.api.handler", "HTTP API: submit, list, inspect and control jobs",
        # 1,769 MB is one full vCPU: a 100,000-task submit is CPU-bound serialization.
        timeout_seconds=29, memory_mb=1769,
        grants=("table:rw", "bucket:presign", "logs:read", "secret:page-key:read", "topic:control:publish",
                "topic:notifications:publish"),
        invoked_by=API,
    ),
    FunctionDef(
        "scheduler", "spotrun.handlers.scheduler.handler", "Admits queued tasks and launches spot workers",
        timeout_seconds=150, memory_mb=1024,
        grants=("table:rw", "ec2:launch", "ec2:terminate", "topic:control:publish", "topic:notifications:publish"),
    ),
    FunctionDef(
        "interruption", "spotrun.handlers.interruption.handler",
        "Acts on spot interruption warnings, rebalance, state-change and health events",
        timeout_seconds=100, memory_mb=1024,
        grants=("table:rw", "ec2:launch", "ec2:terminate", "topic:control:publish", "topic:notifications:publish"),
    ),
    FunctionDef(
        "finisher", "spotrun.handlers.finisher.handler", "Classifies attempt outcomes and completes tasks",
        timeout_seconds=100,
        grants=("table:rw", "ec2:terminate", "topic:control:publish", "topic:notifications:publish"),
    ),
    FunctionDef(
        "worker-api", "spotrun.handlers.worker_api.handler",
        "Worker routes: an instance's attempt, task credentials, claim, checkpoint commits, reuse",
        timeout_seconds=29,
        grants=("table:rw", "role:task:assume", "logs:streams", "topic:control:publish", "topic:notifications:publish"),
        invoked_by=WORKER_ROUTES,
        # Not traced: every worker call (session and renewals, claim, each checkpoint commit) is an invocation,
        # and at light load each would be a trace at $5 per million; its own logs and metrics stay.
        traced=False,
        # A function URL has no throttle of its own (API Gateway throttled these routes at 500 rps, burst 1000):
        # at most this many at once, about those 500 rps at 0.2 s a call, so a fleet booting together cannot
        # take the account's concurrency from the scheduler and the spot-warning handler. A throttled call is a
        # 429, which the agent retries with jittered backoff.
        reserved_concurrency=WORKER_API_CONCURRENCY,
    ),
    FunctionDef(
        "reaper", "spotrun.handlers.reaper.handler",
        "Finds lost workers, stuck launches, orphan instances and timed-out jobs",
        timeout_seconds=240, memory_mb=1024, schedule_minutes=1, reserved_concurrency=1,
        # ec2:launch: its reconcile of every open job admits and launches what a lost message left queued,
        # it sends lost launch calls again, and it carries out moves due before scheduled changes.
        grants=("table:rw", "ec2:launch", "ec2:describe", "ec2:terminate", "topic:control:publish",
                "topic:notifications:publish"),
    ),
    FunctionDef(
        "console", "spotrun.handlers.console.handler",
        "The console: CloudWatch dashboard widgets of jobs, tasks, timelines, logs and costs, and their buttons",
        # A dashboard waits for a widget at most a few seconds; a job's detail is one query per task shown.
        timeout_seconds=20, memory_mb=1024,
        # secret:page-key:read: the jobs widget pages with the API's sealed page tokens (jobs.list_jobs).
        grants=("table:rw", "logs:read", "secret:page-key:read", "topic:control:publish",
                "topic:notifications:publish"),
        invoked_by=DASHBOARD,
    ),
)


def function(key: str) -> FunctionDef:
    return next(f for f in FUNCTIONS if f.key == key)


def queue(key: str) -> QueueDef:
    return next(q for q in QUEUES if q.key == key)
