"""The agent's settings: its wiring (from the instance's environment file) and its timings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    table: str
    bucket: str
    report_queue_url: str
    region: str = "us-east-1"
    work_root: Path = Path("/var/lib/spotrun/work")
    # A heartbeat a minute: liveness for the reaper (stale after 3 min) and progress for users; each one
    # is one DynamoDB write by the agent itself (bench/results/scale.json: cost).
    heartbeat_seconds: float = 60.0
    # How often the agent reads its task's desired state (cancel, suspend, checkpoint now): one
    # read, no write; half the heartbeat interval unless set.
    control_poll_seconds: float | None = None
    metadata_poll_seconds: float = 5.0
    claim_wait_seconds: float = 180.0
    handover_wait_seconds: float = 150.0
    checkpoint_timeout_seconds: float = 90.0
    warning_seconds: float = 120.0  # the spot warning a final checkpoint must fit (time-scaled locally)
    min_checkpoint_interval: float = 30.0
    terminate_on_exit: bool = True
    reuse_instances: bool = True
    reuse_wait_seconds: float = 30.0
    worker_api_url: str = ""  # the worker-api function's URL: the worker routes are `POST <url>/worker/<operation>`
    log_group: str = ""  # the attempts' log group: output shipped live to the attempt's stream (none: not shipped)
    log_ship_seconds: float = 1.0

    @property
    def control_every(self) -> float:
        return self.control_poll_seconds or self.heartbeat_seconds / 2

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> AgentConfig:
        return cls(
            table=env["SPOTRUN_TABLE"], bucket=env["SPOTRUN_BUCKET"],
            report_queue_url=env["SPOTRUN_REPORT_QUEUE_URL"],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            work_root=Path(env.get("SPOTRUN_WORK_ROOT", "/var/lib/spotrun/work")),
            heartbeat_seconds=float(env.get("SPOTRUN_HEARTBEAT_SECONDS", 60)),
            control_poll_seconds=float(env["SPOTRUN_CONTROL_POLL_SECONDS"]) if env.get("SPOTRUN_CONTROL_POLL_SECONDS") else None,
            metadata_poll_seconds=float(env.get("SPOTRUN_METADATA_POLL_SECONDS", 5)),
            min_checkpoint_interval=float(env.get("SPOTRUN_MIN_CHECKPOINT_INTERVAL", 30)),
            handover_wait_seconds=float(env.get("SPOTRUN_HANDOVER_WAIT_SECONDS", 150)),
            warning_seconds=float(env.get("SPOTRUN_WARNING_SECONDS", 120)),
            terminate_on_exit=env.get("SPOTRUN_TERMINATE_ON_EXIT", "1") == "1",
            reuse_instances=env.get("SPOTRUN_REUSE_INSTANCES", "1") == "1",
            worker_api_url=env.get("SPOTRUN_WORKER_API_URL", ""),
            log_group=env.get("SPOTRUN_TASK_LOG_GROUP", ""),
        )
