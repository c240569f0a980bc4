"""The control plane's collaborators in one place: its settings and the ports the use cases call.

`spotrun.aws` builds one from the environment with the AWS adapters (a handler asks for it on its
first call and keeps it warm); a test builds one from moto-backed clients or fakes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from spotrun.ports import Blobs, Bus, Clock, Compute, Credentials, PageKey, SpotPrices, Store, TaskLogs
from spotrun.resources import EnvVar


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    table: str
    bucket: str = ""
    control_topic_arn: str = ""
    notify_topic_arn: str = ""
    report_queue_url: str = ""
    launch_template_id: str = ""
    subnets: dict[str, str] = field(default_factory=dict)
    placement_groups: dict[str, str] = field(default_factory=dict)  # zone -> cluster placement group
    instance_types: tuple[str, ...] = ("c6i.large", "m6i.large")
    account_max_instances: int = 100
    pool_max_instances: int = 20
    heartbeat_stale_seconds: int = 180
    launch_stale_seconds: int = 600
    # A launch call whose answer never came back (its invocation died) is sent again, with the same client
    # token, after this long: longer than the scheduler function's timeout, so the first call has ended.
    relaunch_seconds: int = 180
    cooldown_seconds: int = 900
    # A task is moved off an instance this long before a scheduled change (AWS Health) starts: time for its
    # final checkpoint and its replacement's boot, with the reaper's minute to spare.
    scheduled_move_lead_seconds: int = 1800
    # A running task's cancel is carried out by its agent (outputs and log uploaded, time reported); one not
    # carried out after this long (two control polls and an upload) is done without it.
    cancel_grace_seconds: int = 120
    region: str = "us-east-1"
    task_role_arn: str = ""  # the role workers' task credentials are sessions of
    instance_role_name: str = ""  # the role whose sessions (one per instance) may call the worker routes
    worker_image_id: str = ""  # the AMI workers boot from; empty when unknown (no admission check then)
    page_key_arn: str = ""  # the secret the API seals its page tokens with
    task_log_group: str = ""  # the log group of the attempts' logs (a stream per attempt)

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
            report_queue_url=env.get(EnvVar.REPORT_QUEUE_URL, ""),
            launch_template_id=env.get(EnvVar.LAUNCH_TEMPLATE_ID, ""),
            subnets=json.loads(env.get(EnvVar.SUBNETS) or "{}"),
            placement_groups=json.loads(env.get(EnvVar.PLACEMENT_GROUPS) or "{}"),
            instance_types=tuple(json.loads(env.get(EnvVar.INSTANCE_TYPES) or '["c6i.large", "m6i.large"]')),
            account_max_instances=number(EnvVar.ACCOUNT_MAX_INSTANCES, 100),
            pool_max_instances=number(EnvVar.POOL_MAX_INSTANCES, 20),
            heartbeat_stale_seconds=number(EnvVar.HEARTBEAT_STALE_SECONDS, 180),
            launch_stale_seconds=number(EnvVar.LAUNCH_STALE_SECONDS, 600),
            relaunch_seconds=number(EnvVar.RELAUNCH_SECONDS, 180),
            cancel_grace_seconds=number(EnvVar.CANCEL_GRACE_SECONDS, 120),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            task_role_arn=env.get(EnvVar.TASK_ROLE_ARN, ""),
            instance_role_name=env.get(EnvVar.INSTANCE_ROLE_NAME, ""),
            worker_image_id=env.get(EnvVar.WORKER_IMAGE_ID, ""),
            page_key_arn=env.get(EnvVar.PAGE_KEY_ARN, ""),
            task_log_group=env.get(EnvVar.TASK_LOG_GROUP, ""),
        )

    @property
    def zones(self) -> list[str]:
        return sorted(self.subnets)

    @property
    def pools(self) -> list[str]:
        return [f"{t}@{z}" for t in self.instance_types for z in self.zones]


@dataclass
class ControlPlane:
    settings: Settings
    store: Store
    compute: Compute
    bus: Bus
    blobs: Blobs | None = None  # the API function's
    prices: SpotPrices | None = None  # without them the broker estimates from the catalogue
    credentials: Credentials | None = None  # the worker API function's
    page_key: PageKey | None = None  # the API function's
    logs: TaskLogs | None = None  # the attempts' logs (without a log group: none are kept)
    clock: Clock = system_clock
