"""The local runtime: spotrun's real handlers and real agents on one machine.

- moto in server mode is the AWS endpoint (spotrun_local.endpoint); every resource is created
  from `spotrun.resources` (the same declarations the CDK stack is built from);
- the control plane (spotrun_local.control_plane): SQS pumps feed the handlers the events Lambda
  would (SNS envelopes, EventBridge events routed by moto's rules, reports), with
  partial batch failures and dead-letter queues; the scheduled functions (the reaper) run on their
  (time-scaled) rates; all of it derived from `spotrun.resources` (`spotrun_local.wiring`); one
  *generation* of it can be dropped abruptly and rebuilt (the chaos soak does);
- the instances (spotrun_local.instances): one real agent process per EC2 instance moto launches,
  each in PID and mount namespaces of its own (spotrun_local.namespaces), working in
  `/var/lib/spotrun/work` as on AWS, and gone with everything it started when it is terminated;
  a metadata service stand-in, and the spot market replayed from real traces: a pool without
  capacity refuses launches, a pool losing capacity gets interruption warnings and is reclaimed
  after the (time-scaled) two minutes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from spotrun.provision import WORKER_API_ARN, provision
from spotrun.resources import EnvVar
from spotrun_local import dmtcp_build
from spotrun_local.control_plane import ControlPlaneHost, ControlPlaneStopped, Generation
from spotrun_local.endpoint import ACCOUNT, REGION, moto_server
from spotrun_local.function_url import function_url
from spotrun_local.gateway import LocalCredentials
from spotrun_local.iam_guard import Denial, IamGuard
from spotrun_local.instances import REPO, Instance, InstanceSupervisor
from spotrun_local.market import MarketReplay
from spotrun_local.metadata import MetadataService
from spotrun_local.namespaces import require_isolation
from spotrun_local.persistence import RestoreReport, StateJournal
from spotrun_local.pump import SqsPump

__all__ = ["REPO", "Counters", "Instance", "LocalRuntime", "RuntimeOptions"]
log = logging.getLogger("spotrun.local")


def _reason(denial: Denial | None) -> str | None:
    return None if denial is None else f"{denial.principal_arn} may not {denial.action} on {denial.resource} {denial.reason}"


@dataclass
class RuntimeOptions:
    root: Path = Path(".spotrun/run")
    tick_seconds: float = 2.0  # wall seconds per trace tick (~195 s of the original)
    warning_seconds: float = 12.0  # the two-minute warning, time-scaled
    heartbeat_seconds: float = 2.0
    reaper_seconds: float = 5.0  # wall seconds per minute of a scheduled function's rate (the reaper's is 1)
    heartbeat_stale_seconds: int = 12
    launch_stale_seconds: int = 60
    relaunch_seconds: int = 15  # a launch call whose answer was lost is sent again after this long
    cancel_grace_seconds: int = 20  # a running task's cancel its agent did not carry out is done without it
    cooldown_seconds: int = 60
    account_max_instances: int = 8
    pool_max_instances: int = 4
    start_tick: int = 0
    zones: tuple[str, ...] = ("us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f")
    instance_types: tuple[str, ...] = ("c6i.large", "m6i.large")
    visibility_timeout_seconds: int = 20  # how long a failed batch stays invisible before it is retried
    # Where moto's state is journaled and restored from at start (spotrun_local.persistence); None: in
    # memory only, gone with the process (the tests and the soak).
    state: Path | None = None
    moto_port: int = 0  # 0: any free port


@dataclass
class Counters:
    warnings: int = 0
    reclaims: int = 0
    reclaims_without_warning: int = 0
    agent_kills: int = 0
    agents_started: int = 0
    handler_errors: int = 0
    launches_refused: int = 0
    control_plane_starts: int = 0
    control_plane_crashes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class LocalRuntime(ControlPlaneHost, InstanceSupervisor):
    def __init__(self, market: MarketReplay, options: RuntimeOptions | None = None):
        self.market = market
        self.options = options or RuntimeOptions()
        self.counters = Counters()
        self.instances: dict[str, Instance] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Each function runs one invocation at a time (like a reserved concurrency of 1), but the functions
        # run concurrently with each other, as in AWS: correctness comes from the guarded writes.
        self._locks: dict[str, threading.Lock] = {}
        self.generation: Generation | None = None
        self._generations = 0
        # Hooks (the chaos soak uses them; nothing is installed by default):
        # - called with each control plane generation's boto3 session before its clients are made;
        self.session_hooks: list[Callable[[Any, Generation], None]] = []
        # - wraps each SQS pump of a generation (e.g. to duplicate, delay or drop deliveries);
        self.pump_wrapper: Callable[[SqsPump, Generation], Any] | None = None
        # - adjusts the environment of each agent process before it starts.
        self.agent_env_hooks: list[Callable[[Instance, dict[str, str]], None]] = []

    # ------------------------------------------------------------ start/stop

    def start(self) -> LocalRuntime:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.options.root.mkdir(parents=True, exist_ok=True)
        # Before anything starts: no namespaces, no instances (never instances sharing a work directory).
        require_isolation(self.options.root)
        self.dmtcp_bin = self._find_dmtcp()
        for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                            "AWS_DEFAULT_REGION": REGION, "POWERTOOLS_TRACE_DISABLED": "true",
                            "POWERTOOLS_METRICS_NAMESPACE": "spotrun"}.items():
            os.environ.setdefault(name, value)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        # IAM for the workers: moto evaluates no policy, so the guard does, for the instance and task
        # role sessions, with the documents `provision` stored on those roles (spotrun.access).
        self.guard = IamGuard({}, region=REGION, account=ACCOUNT, resource_tags=self._instance_tags)
        self.journal = StateJournal(self.options.state) if self.options.state is not None else None
        self.restored: RestoreReport | None = None
        if self.journal is not None:
            self.journal.load()  # an unusable state directory stops the start here, before anything runs
        self.moto = moto_server(port=self.options.moto_port, guard=self.guard, journal=self.journal)
        self.moto.start()
        host, self.moto_port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{self.moto_port}"
        # moto's backends live in this process: start from an empty account even after an earlier runtime.
        import requests

        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        self.session = boto3.session.Session(region_name=REGION)
        self.env = provision(self.session, zones=self.options.zones, instance_types=self.options.instance_types)
        self.env.update({
            "SPOTRUN_ACCOUNT_MAX_INSTANCES": str(self.options.account_max_instances),
            "SPOTRUN_POOL_MAX_INSTANCES": str(self.options.pool_max_instances),
            "SPOTRUN_HEARTBEAT_STALE_SECONDS": str(self.options.heartbeat_stale_seconds),
            "SPOTRUN_LAUNCH_STALE_SECONDS": str(self.options.launch_stale_seconds),
            "SPOTRUN_RELAUNCH_SECONDS": str(self.options.relaunch_seconds),
            "SPOTRUN_CANCEL_GRACE_SECONDS": str(self.options.cancel_grace_seconds),
        })
        if self.journal is not None:  # the items, objects and messages of the last run, before anything reads them
            self.restored = self.journal.restore()
            self.journal.activate()
        self.iam = self.session.client("iam")
        for arn_name in (self.env[EnvVar.TASK_ROLE_ARN], self.env["SPOTRUN_INSTANCE_ROLE_ARN"]):
            name = arn_name.rsplit("/", 1)[-1]
            document = self.iam.get_role_policy(RoleName=name, PolicyName="spotrun")["PolicyDocument"]
            self.guard.add_role(arn_name, json.loads(document) if isinstance(document, str) else document)
        self.sts = self.session.client("sts")
        self._instance_credentials: dict[str, tuple[LocalCredentials, str]] = {}
        # The worker-api function's URL (AuthType AWS_IAM): instance sessions sign for `lambda`, and the guard
        # answers for IAM whether their role may call it (the instance role's grant, spotrun.access).
        worker_api_arn = self.env[WORKER_API_ARN]
        self.worker_routes = function_url(self.workers_handler, self._instance_credentials.get,
                                          lambda key: _reason(self.guard.function_url_denial(key, worker_api_arn)))
        self.metadata = MetadataService().start()
        self.sqs = self.session.client("sqs")
        self.ec2 = self.session.client("ec2")
        self.events = self.session.client("events")
        self.start_control_plane()
        self._loop("supervisor", self._supervise, 0.3)
        self._loop("market", self._replay_market, 0.3)
        return self

    @staticmethod
    def _find_dmtcp() -> Path | None:
        """The DMTCP the agents get (SPOTRUN_DMTCP_BIN, else `make dmtcp`'s build, found or made), so the
        default checkpoint method works locally. Without the vendored source and any build, jobs can still
        use `signal` or `none`: say so once. A broken setting or build is an error."""
        try:
            return dmtcp_build.find_bin()
        except dmtcp_build.DmtcpMissing as missing:
            if dmtcp_build.tarball().is_file():
                raise
            log.warning("checkpoint method 'dmtcp' (the default) will fail on local instances: %s", missing)
            return None

    # ------------------------------------------------------- control plane

    def stop(self) -> None:
        self._stop.set()
        if self.generation is not None:
            self.generation.stop.set()
        for instance in list(self.instances.values()):
            self._kill(instance)
        for thread in [*self._threads, *(self.generation.threads if self.generation else [])]:
            thread.join(timeout=5)
        self.metadata.stop()
        self.worker_routes.stop()
        self.moto.stop()
        if self.journal is not None:
            self.journal.close()
        os.environ.pop("AWS_ENDPOINT_URL", None)

    def _loop(self, name: str, body: Callable[[], Any], pause: float, generation: Generation | None = None) -> None:
        """Run `body` until the runtime stops (or, for a control plane thread, until its generation does)."""
        stop = generation.stop if generation is not None else self._stop

        def stopped() -> bool:
            return stop.is_set() or self._stop.is_set()

        def run() -> None:
            while not stopped():
                try:
                    body()
                except ControlPlaneStopped:
                    return
                except Exception:
                    if not stopped():
                        log.exception("%s failed", name)
                if pause:
                    stop.wait(pause)
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        (generation.threads if generation is not None else self._threads).append(thread)

