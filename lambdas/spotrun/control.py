"""The control plane's collaborators in one place, built from the environment or injected by tests.

Nothing is created at import time: a handler asks for `ControlPlane.from_env()` on its first call
(and keeps it warm), a test builds one from moto-backed clients or fakes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from spotrun.resources import EnvVar


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    table: str
    bucket: str = ""
    control_topic_arn: str = ""
    notify_topic_arn: str = ""
    heartbeat_queue_url: str = ""
    report_queue_url: str = ""
    launch_template_id: str = ""
    subnets: dict[str, str] = field(default_factory=dict)
    instance_types: tuple[str, ...] = ("c6i.large", "m6i.large")
    account_max_instances: int = 100
    pool_max_instances: int = 20
    heartbeat_stale_seconds: int = 180
    launch_stale_seconds: int = 600
    cooldown_seconds: int = 900
    region: str = "us-east-1"
    task_role_arn: str = ""  # the role workers' task credentials are sessions of
    instance_role_name: str = ""  # the role whose sessions (one per instance) may call the worker routes

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def number(name: str, default: int) -> int:
            raw = env.get(name)
            return int(raw) if raw else default

        return cls(
            table=env[EnvVar.TABLE],
            bucket=env.get(EnvVar.BUCKET, ""),
            control_topic_arn=env.get(EnvVar.CONTROL_TOPIC_ARN, ""),
            notify_topic_arn=env.get(EnvVar.NOTIFY_TOPIC_ARN, ""),
            heartbeat_queue_url=env.get(EnvVar.HEARTBEAT_QUEUE_URL, ""),
            report_queue_url=env.get(EnvVar.REPORT_QUEUE_URL, ""),
            launch_template_id=env.get(EnvVar.LAUNCH_TEMPLATE_ID, ""),
            subnets=json.loads(env.get(EnvVar.SUBNETS) or "{}"),
            instance_types=tuple(json.loads(env.get(EnvVar.INSTANCE_TYPES) or '["c6i.large", "m6i.large"]')),
            account_max_instances=number(EnvVar.ACCOUNT_MAX_INSTANCES, 100),
            pool_max_instances=number(EnvVar.POOL_MAX_INSTANCES, 20),
            heartbeat_stale_seconds=number(EnvVar.HEARTBEAT_STALE_SECONDS, 180),
            launch_stale_seconds=number(EnvVar.LAUNCH_STALE_SECONDS, 600),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            task_role_arn=env.get(EnvVar.TASK_ROLE_ARN, ""),
            instance_role_name=env.get(EnvVar.INSTANCE_ROLE_NAME, ""),
        )

    @property
    def zones(self) -> list[str]:
        return sorted(self.subnets)

    @property
    def pools(self) -> list[str]:
        return [f"{t}@{z}" for t in self.instance_types for z in self.zones]


class SpotPrices(Protocol):
    def prices(self, instance_types: Any, now: datetime) -> dict[str, float]: ...


@dataclass
class ControlPlane:
    settings: Settings
    store: Any  # spotrun.adapters.dynamo.DynamoStore
    compute: Any  # spotrun.adapters.ec2.Ec2Compute
    bus: Any  # spotrun.adapters.sns.SnsBus
    blobs: Any = None  # spotrun.adapters.s3.S3Blobs
    prices: SpotPrices | None = None
    credentials: Any = None  # spotrun.adapters.sts.TaskCredentials (the workers function only)
    clock: Callable[[], datetime] = system_clock

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, session: Any = None) -> ControlPlane:
        import boto3
        from botocore.config import Config

        from spotrun.adapters.dynamo import BATCH_WRITE_THREADS, DynamoStore
        from spotrun.adapters.ec2 import Ec2Compute, Ec2SpotPrices
        from spotrun.adapters.s3 import S3Blobs
        from spotrun.adapters.sns import SnsBus
        from spotrun.adapters.sts import TaskCredentials

        settings = Settings.from_env(env)
        session = session or boto3.session.Session()
        config = Config(retries={"mode": "standard", "max_attempts": 6}, signature_version="s3v4")

        def client(name: str, extra: Config | None = None) -> Any:
            return session.client(name, region_name=settings.region, config=config.merge(extra) if extra else config)

        # DynamoDB checks every request itself; botocore's client-side check of the same shapes was
        # ~40% of a 100,000-task submit's CPU (bench/results/scale.json). The store writes from up to
        # BATCH_WRITE_THREADS threads, each wanting its own connection.
        dynamo = client("dynamodb", Config(parameter_validation=False, max_pool_connections=BATCH_WRITE_THREADS + 4))
        ec2 = client("ec2")
        return cls(
            settings=settings,
            store=DynamoStore(dynamo, settings.table),
            compute=Ec2Compute(ec2, settings.launch_template_id, settings.subnets),
            bus=SnsBus(client("sns"), settings.control_topic_arn, settings.notify_topic_arn),
            blobs=S3Blobs(client("s3"), settings.bucket),
            prices=Ec2SpotPrices(ec2),
            credentials=TaskCredentials(client("sts"), settings.task_role_arn) if settings.task_role_arn else None,
        )


_cached: ControlPlane | None = None


def default_control_plane() -> ControlPlane:
    """The process-wide control plane of a Lambda container, built on first use."""
    global _cached
    if _cached is None:
        _cached = ControlPlane.from_env()
    return _cached
