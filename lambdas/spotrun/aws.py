"""The control plane on AWS: boto3 clients and the adapters behind the ports, built from the environment.

The one module that knows both the use cases' `ControlPlane` and the adapters (the composition
root). Nothing is created at import time: a handler asks for `default_control_plane()` on its first
call and keeps it for the life of its Lambda container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

from spotrun.adapters.dynamo import BATCH_WRITE_THREADS, DynamoStore
from spotrun.adapters.ec2 import Ec2Compute, Ec2SpotPrices
from spotrun.adapters.logs import CloudWatchTaskLogs
from spotrun.adapters.s3 import S3Blobs
from spotrun.adapters.secrets import SecretKey
from spotrun.adapters.sns import SnsBus
from spotrun.adapters.sts import TaskCredentials
from spotrun.control import ControlPlane, Settings


def control_plane_from_env(env: Mapping[str, str] = os.environ, session: Any = None) -> ControlPlane:
    """Settings from `env`, clients from `session` (default: a new boto3 session)."""
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
    return ControlPlane(
        settings=settings,
        store=DynamoStore(dynamo, settings.table),
        compute=Ec2Compute(ec2, settings.launch_template_id, settings.subnets, settings.placement_groups),
        bus=SnsBus(client("sns"), settings.control_topic_arn, settings.notify_topic_arn),
        blobs=S3Blobs(client("s3"), settings.bucket),
        prices=Ec2SpotPrices(ec2),
        credentials=TaskCredentials(client("sts"), settings.task_role_arn) if settings.task_role_arn else None,
        page_key=SecretKey(client("secretsmanager"), settings.page_key_arn)
        if settings.page_key_arn else None,
        logs=CloudWatchTaskLogs(client("logs"), settings.task_log_group) if settings.task_log_group else None,
    )


_cached: ControlPlane | None = None


def default_control_plane() -> ControlPlane:
    """The process-wide control plane of a Lambda container, built on first use."""
    global _cached
    if _cached is None:
        _cached = control_plane_from_env()
    return _cached
