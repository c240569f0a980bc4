"""The EC2 side of the local runtime: one real agent process per instance moto runs, and the market.

- an instance supervisor turns each EC2 instance moto launches into a real agent process in a PID
  and mount namespace of its own (`spotrun_local.namespaces`): every instance works in the same
  `/var/lib/spotrun/work` as on AWS, backed by its own `instances/<id>/work`, and everything it
  started dies with it when it is terminated, or when the runtime itself dies;
- the metadata service stand-in answers each agent's IMDSv2 calls, with credentials of an
  instance role session named after the instance;
- the spot market is replayed from real traces: a pool losing capacity gets interruption warnings
  and is reclaimed after the (time-scaled) two minutes.

`InstanceSupervisor` is a part of `LocalRuntime` (spotrun_local.runtime): it uses the runtime's
clients, `env`, `options`, `market`, `metadata`, `guard`, `worker_routes` and `counters`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spotrun.resources import EnvVar
from spotrun_local import moto_ec2
from spotrun_local.endpoint import ACCOUNT, REGION
from spotrun_local.gateway import LocalCredentials
from spotrun_local.namespaces import WORK_PATH, LocalInstance

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("spotrun.local")


@dataclass
class Instance:
    instance_id: str
    instance_type: str
    zone: str
    spot: bool
    process: LocalInstance | None = None  # its processes; `poll()` is the agent's status
    warned_at: float | None = None
    reclaim_at: float | None = None
    killed: bool = False
    exit_code: int | None = None  # the agent process's, once it ended (negative: killed by that signal)
    role_session: str = ""  # ARN of the instance role session its agent signs with
    address: str = ""  # its private address: a loopback address of its own (a gang's ranks reach each other there)


def loopback_address(number: int) -> str:
    """The `number`th local instance's own address in 127.0.0.0/8 (all of it is loopback on Linux), so a
    gang's ranks talk over TCP between distinct addresses, as between the private IPs of separate instances."""
    return f"127.77.{(number // 250) % 250}.{number % 250 + 2}"


class InstanceSupervisor:
    """Agents for moto's instances, and the market's warnings and reclaims (a mixin of LocalRuntime)."""

    env: dict[str, str]
    options: Any
    market: Any
    counters: Any
    instances: dict[str, Instance]
    agent_env_hooks: list[Callable[[Instance, dict[str, str]], None]]
    _instance_credentials: dict[str, tuple[LocalCredentials, str]]
    dmtcp_bin: Path | None

    def _instance_tags(self, arn: str) -> dict[str, str]:
        """Resource tags for the guard's aws:ResourceTag conditions (EC2 instances only)."""
        if ":instance/" not in arn:
            return {}
        answer = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [arn.rsplit("/", 1)[-1]]}])
        return {tag["Key"]: tag["Value"] for tag in answer.get("Tags", [])}

    def _instance_identity(self, instance: Instance) -> dict[str, str]:
        """What the metadata service gives an instance: a session of the instance role named after it."""
        role_arn = self.env["SPOTRUN_INSTANCE_ROLE_ARN"]
        answer = self.sts.assume_role(RoleArn=role_arn, RoleSessionName=instance.instance_id)
        credentials = answer["Credentials"]
        key = credentials["AccessKeyId"]
        session_arn = answer["AssumedRoleUser"]["Arn"]
        self.guard.register(key, role_arn, instance.instance_id,
                            source_instance_arn=f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance.instance_id}")
        self._instance_credentials[key] = (LocalCredentials(key, credentials["SecretAccessKey"]), session_arn)
        instance.role_session = session_arn
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": credentials["SessionToken"]}

    # ------------------------------------------------------------ instances

    def _supervise(self) -> None:
        """Start an agent for every new instance; SIGKILL the agents of terminated instances."""
        seen = set()
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:spotrun:managed", "Values": ["true"]}])
        for page in pages:
            for reservation in page["Reservations"]:
                for raw in reservation["Instances"]:
                    instance_id, state = raw["InstanceId"], raw["State"]["Name"]
                    seen.add(instance_id)
                    known = self.instances.get(instance_id)
                    if state in ("pending", "running") and known is None:
                        instance = Instance(instance_id, raw["InstanceType"], raw["Placement"]["AvailabilityZone"],
                                            raw.get("InstanceLifecycle") == "spot")
                        self.instances[instance_id] = instance
                        self._start_agent(instance)
                    elif state not in ("pending", "running") and known is not None and not known.killed:
                        self._kill(known)
        for instance_id, instance in self.instances.items():
            if instance_id not in seen and not instance.killed:
                self._kill(instance)
        self._supervise_exits()

    def _supervise_exits(self) -> None:
        """Record each agent's end once (the instance may stay up after its agent died)."""
        for instance in list(self.instances.values()):
            code = instance.process.poll() if instance.exit_code is None and instance.process is not None else None
            if code is not None:
                instance.exit_code = code
                event = {"kind": "agent_exit", "instance": instance.instance_id, "code": instance.exit_code,
                         "instance_killed": instance.killed, "at": time.time()}
                why = instance.process.setup_error() if instance.process is not None else None
                if why:  # the instance never got its namespaces: its agent never ran
                    log.error("instance %s: %s", instance.instance_id, why)
                    event["setup_error"] = why
                self.counters.events.append(event)

    def _start_agent(self, instance: Instance) -> None:
        """Boot the instance: its agent, as the child of the init of the instance's own namespaces. Runs on
        the supervisor thread, which lives as long as the runtime: the instance dies with that thread."""
        instance.address = loopback_address(self.counters.agents_started)
        self.metadata.register(instance.instance_id, instance.instance_type, instance.zone, address=instance.address)
        home = self.options.root / "instances" / instance.instance_id
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")},
            **{k: v for k, v in self.env.items() if k.startswith("SPOTRUN_") or k == "AWS_REGION"},
            "AWS_ENDPOINT_URL": self.endpoint, **self._instance_identity(instance),
            EnvVar.WORKER_API_URL: self.worker_routes.url,
            "SPOTRUN_IMDS_ENDPOINT": self.metadata.endpoint(instance.instance_id),
            "SPOTRUN_WORK_ROOT": str(WORK_PATH),  # in the instance's mount namespace: its own instances/<id>/work
            "SPOTRUN_HEARTBEAT_SECONDS": str(self.options.heartbeat_seconds),
            "SPOTRUN_METADATA_POLL_SECONDS": "0.5",
            "SPOTRUN_HANDOVER_WAIT_SECONDS": str(self.options.warning_seconds + 5),
            "SPOTRUN_WARNING_SECONDS": str(self.options.warning_seconds),  # what a final checkpoint must fit
            "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("lambdas", "worker", "local")),
        }
        if self.dmtcp_bin is not None:
            env["SPOTRUN_DMTCP_BIN"] = str(self.dmtcp_bin)
        for hook in self.agent_env_hooks:
            hook(instance, env)
        instance.process = LocalInstance.launch(home.resolve(), [sys.executable, "-m", "spotrun_worker"], env,
                                                home / "agent.log")
        self.counters.agents_started += 1

    def _kill(self, instance: Instance) -> None:
        """The instance is gone: so is everything on it, at once (its agent, its programs, DMTCP's
        coordinators: the whole PID namespace)."""
        instance.killed = True
        if instance.process is not None:
            instance.process.terminate()

    def kill_agent(self, instance_id: str) -> None:
        """Chaos: the agent dies with SIGKILL and no warning; the instance and its programs stay up."""
        instance = self.instances[instance_id]
        if instance.process is not None and instance.process.kill_agent():
            self.counters.agent_kills += 1
            self.counters.events.append({"kind": "agent_kill", "instance": instance_id, "at": time.time()})

    # ---------------------------------------------------------------- market

    def _replay_market(self) -> None:
        now = time.monotonic()
        for instance in list(self.instances.values()):
            if instance.killed or not instance.spot:
                continue
            if instance.warned_at is None and not self.market.available(instance.zone):
                self._warn(instance)
            elif instance.reclaim_at is not None and now >= instance.reclaim_at:
                self._reclaim(instance)

    def interrupt(self, instance_id: str) -> None:
        """A spot interruption warning for this instance now, exactly as the market replay gives one (the
        metadata notice, the EventBridge event, the reclaim after the time-scaled two minutes)."""
        instance = self.instances[instance_id]
        if not instance.spot or instance.killed or instance.warned_at is not None:
            raise ValueError(f"{instance_id} is not a running spot instance without a warning")
        self._warn(instance)

    def _warn(self, instance: Instance) -> None:
        at = datetime.now(UTC) + timedelta(seconds=self.options.warning_seconds)
        instance.warned_at = time.monotonic()
        instance.reclaim_at = instance.warned_at + self.options.warning_seconds
        self.metadata.schedule_action(instance.instance_id, "terminate", at)
        self._put_event("EC2 Spot Instance Interruption Warning",
                        {"instance-id": instance.instance_id, "instance-action": "terminate"})
        self.counters.warnings += 1
        self.counters.events.append({"kind": "warning", "instance": instance.instance_id, "zone": instance.zone,
                                     "at": time.time()})

    def _reclaim(self, instance: Instance) -> None:
        self.reclaim(instance.instance_id)

    def reclaim(self, instance_id: str) -> None:
        """Spot takes the instance back, as EC2 does it: terminated with the state reason
        `Server.SpotInstanceTermination`, everything on it gone at once, then the state-change event. The
        market replay calls it two (time-scaled) minutes after its warning; the chaos soak calls it
        without any warning, which AWS says can happen (the warning is best effort)."""
        instance = self.instances[instance_id]
        warned = instance.warned_at is not None
        instance.reclaim_at = None
        moto_ec2.reclaim(instance_id, REGION, ACCOUNT)
        self._kill(instance)
        for state in ("shutting-down", "terminated"):  # EC2's two state changes (the stack's rule passes the first)
            self._put_event("EC2 Instance State-change Notification", {"instance-id": instance_id, "state": state})
        self.counters.reclaims += 1
        if not warned:
            self.counters.reclaims_without_warning += 1
        self.counters.events.append({"kind": "reclaim" if warned else "reclaim_without_warning",
                                     "instance": instance_id, "zone": instance.zone, "at": time.time()})

    def _put_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Through EventBridge (moto), so the rules' patterns route it to the interruptions queue."""
        self.events.put_events(Entries=[{"Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail),
                                         "Resources": [f"arn:aws:ec2:{REGION}:000000000000:instance/{detail['instance-id']}"]}])


