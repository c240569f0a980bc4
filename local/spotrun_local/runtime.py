"""The local runtime: spotrun's real handlers and real agents on one machine.

- moto in server mode is the AWS endpoint; every resource is created from `spotrun.resources`
  (the same declarations the CDK stack is built from);
- SQS pumps feed the handlers the events Lambda would (SNS envelopes, EventBridge events routed by
  moto's rules, heartbeats, reports), with partial batch failures and dead-letter queues;
- the scheduled functions (the reaper) run on their (time-scaled) rates;
- all of it derived from `spotrun.resources` (`spotrun_local.wiring`): which function consumes which
  queue, which runs on a schedule, which answers the API and the worker routes;
- the control plane (the `ControlPlane` with its clients and caches, the pumps, the reaper) is one
  *generation* that can be dropped abruptly and rebuilt from the environment while moto and the
  instances stay up (`crash_control_plane` / `start_control_plane`, used by the chaos soak);
- an instance supervisor turns each EC2 instance moto launches into a real agent process in a PID
  and mount namespace of its own (`spotrun_local.namespaces`): every instance works in the same
  `/var/lib/spotrun/work` as on AWS, backed by its own `instances/<id>/work`, and everything it
  started dies with it when it is terminated, or when the runtime itself dies;
- a metadata service stand-in answers each agent's IMDSv2 calls;
- the spot market is replayed from real traces: a pool without capacity refuses launches, a pool
  losing capacity gets interruption warnings and is reclaimed after the (time-scaled) two minutes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from spotrun.adapters.ec2 import Ec2Compute, LaunchRequest, LaunchResult
from spotrun.aws import control_plane_from_env
from spotrun.control import ControlPlane
from spotrun.provision import provision
from spotrun.resources import EnvVar
from spotrun_local import dmtcp_build, wiring
from spotrun_local.gateway import Gateway, LocalCredentials, new_local_credentials
from spotrun_local.iam_guard import IamGuard
from spotrun_local.market import MarketReplay
from spotrun_local.metadata import MetadataService
from spotrun_local.namespaces import WORK_PATH, LocalInstance, require_isolation
from spotrun_local.pump import SqsPump

log = logging.getLogger("spotrun.local")
REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def moto_server(ip_address: str = "127.0.0.1", port: int = 0, guard: Any = None) -> Any:
    """moto in server mode, with its DynamoDB requests served one at a time.

    moto's TransactWriteItems snapshots the whole table first and, when any of its conditions fails,
    puts the snapshot back: every write other threads made to the table in between is undone (and
    the snapshot's deepcopy can fail while another request changes the table). spotrun relies on
    failing conditional transactions for all its concurrency control, so the local runtime, whose
    handlers and agents all call moto at once, lost writes under load (tasks stuck QUEUED without a
    trace, job counts off): found by the chaos soak. DynamoDB itself is atomic per item and per
    transaction; serializing moto's DynamoDB requests restores that. Other services (long-polled SQS
    receives among them) stay concurrent.

    With a `guard` (spotrun_local.iam_guard.IamGuard), requests signed by worker sessions are
    authorized against their role's policy first, as IAM would: moto itself evaluates none.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            if guard is not None:
                app = guard.wrap(app)
            dynamodb = threading.Lock()

            def serve(environ: dict[str, Any], start_response: Any) -> Any:
                if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                    return app(environ, start_response)
                with dynamodb:
                    body = app(environ, start_response)
                    try:
                        return [b"".join(body)]
                    finally:
                        if hasattr(body, "close"):
                            body.close()

            self._server = make_server(self._ip_address, self._port, serve, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server(ip_address=ip_address, port=port, verbose=False)


class LocalCompute(Ec2Compute):
    """EC2 through moto, with the replayed market deciding whether spot capacity exists."""

    def __init__(self, client: Any, launch_template_id: str, subnets: dict[str, str], market: MarketReplay):
        super().__init__(client, launch_template_id, subnets)
        self.market = market
        self.refused: list[str] = []

    def launch(self, request: LaunchRequest) -> LaunchResult:
        if request.spot and not self.market.available(request.zone):
            self.refused.append(f"{request.instance_type}@{request.zone}")
            return LaunchResult(error_code="InsufficientInstanceCapacity",
                                error_message=f"no spot capacity in {request.zone} (replayed trace)")
        return super().launch(request)


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


@dataclass
class RuntimeOptions:
    root: Path = Path(".spotrun/run")
    tick_seconds: float = 2.0  # wall seconds per trace tick (~195 s of the original)
    warning_seconds: float = 12.0  # the two-minute warning, time-scaled
    heartbeat_seconds: float = 2.0
    reaper_seconds: float = 5.0  # wall seconds per minute of a scheduled function's rate (the reaper's is 1)
    heartbeat_stale_seconds: int = 12
    launch_stale_seconds: int = 60
    cooldown_seconds: int = 60
    account_max_instances: int = 8
    pool_max_instances: int = 4
    start_tick: int = 0
    zones: tuple[str, ...] = ("us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f")
    instance_types: tuple[str, ...] = ("c6i.large", "m6i.large")
    visibility_timeout_seconds: int = 20  # how long a failed batch stays invisible before it is retried


@dataclass
class Counters:
    warnings: int = 0
    reclaims: int = 0
    agent_kills: int = 0
    agents_started: int = 0
    handler_errors: int = 0
    launches_refused: int = 0
    control_plane_starts: int = 0
    control_plane_crashes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class ControlPlaneStopped(BaseException):
    """Raised at the next AWS call of a control plane generation that was dropped: like a process that
    died, it unwinds everything (a BaseException, so no `except Exception` in the handlers resumes work)."""


@dataclass
class Generation:
    """One life of the control plane: its ControlPlane (clients, caches), pumps and reaper."""

    number: int
    stop: threading.Event = field(default_factory=threading.Event)
    crashed: bool = False
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    cp: Any = None

    def lock(self, name: str) -> threading.Lock:
        return self.locks.setdefault(name, threading.Lock())


class LocalRuntime:
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
        self.moto = moto_server(guard=self.guard)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
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
        })
        self.iam = self.session.client("iam")
        for arn_name in (self.env[EnvVar.TASK_ROLE_ARN], self.env["SPOTRUN_INSTANCE_ROLE_ARN"]):
            name = arn_name.rsplit("/", 1)[-1]
            document = self.iam.get_role_policy(RoleName=name, PolicyName="spotrun")["PolicyDocument"]
            self.guard.add_role(arn_name, json.loads(document) if isinstance(document, str) else document)
        self.sts = self.session.client("sts")
        self._instance_credentials: dict[str, tuple[LocalCredentials, str]] = {}
        self.worker_gateway = Gateway(self.workers_handler, new_local_credentials(),
                                      principals=self._instance_credentials.get, function="worker-api").start()
        self.metadata = MetadataService().start()
        self.sqs = self.session.client("sqs")
        self.ec2 = self.session.client("ec2")
        self.events = self.session.client("events")
        self.start_control_plane()
        self._loop("supervisor", self._supervise, 0.3)
        self._loop("market", self._replay_market, 0.3)
        return self

    # ------------------------------------------------------- control plane

    def build_control_plane(self, session: Any) -> ControlPlane:
        """A control plane from the environment, as a cold Lambda container builds it, on local compute."""
        cp = control_plane_from_env(self.env, session=session)
        cp.settings = _replace(cp.settings, cooldown_seconds=self.options.cooldown_seconds)
        cp.compute = LocalCompute(cp.compute.client, cp.settings.launch_template_id, cp.settings.subnets, self.market)
        cp.prices = self.market
        return cp

    def start_control_plane(self) -> Generation:
        """Start a fresh generation: new session, clients and caches, pumps and reaper."""
        self._generations += 1
        generation = Generation(self._generations)
        session = boto3.session.Session(region_name=REGION)

        def cut(**_: Any) -> None:
            if generation.crashed:
                raise ControlPlaneStopped(f"control plane generation {generation.number} was dropped")

        session.events.register("before-call", cut)
        session.events.register("before-send", cut)
        for hook in self.session_hooks:
            hook(session, generation)
        generation.cp = self.build_control_plane(session)
        self.cp = generation.cp
        self.generation = generation
        sqs = session.client("sqs")
        queues = json.loads(self.env["SPOTRUN_QUEUE_URLS"])
        for consumer in wiring.consumers():
            key = consumer.queue.key
            pump: Any = SqsPump(sqs, queues[key], self._guarded(consumer.handler, key, generation), key,
                                batch_size=consumer.queue.batch_size,
                                visibility_timeout=self.options.visibility_timeout_seconds,
                                context=wiring.lambda_context(consumer.function))
            if self.pump_wrapper is not None:
                pump = self.pump_wrapper(pump, generation)
            self._loop(f"pump-{key}-{generation.number}", lambda p=pump: p.poll_once(wait_seconds=1), 0.0, generation)
        for scheduled in wiring.schedules():
            self._loop(f"{scheduled.function.key}-{generation.number}",
                       lambda s=scheduled: self._run_scheduled(s, generation),
                       self.options.reaper_seconds * scheduled.minutes, generation)
        self.counters.control_plane_starts += 1
        return generation

    def crash_control_plane(self) -> None:
        """Drop the control plane abruptly: its threads stop, in-flight invocations die at their next AWS
        call. moto (AWS) and the instances stay up; `start_control_plane` builds the next generation."""
        generation = self.generation
        if generation is None:
            return
        generation.crashed = True
        generation.stop.set()
        self.counters.control_plane_crashes += 1
        self.counters.events.append({"kind": "control_plane_crash", "generation": generation.number,
                                     "at": time.time()})

    def _lock(self, name: str) -> threading.Lock:
        return self._locks.setdefault(name, threading.Lock())

    def api_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock("api"):
            return wiring.handler("api")(event, context, control=self.cp)

    def workers_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The worker routes (API Gateway runs one invocation per request, concurrently). An invocation
        of a control plane that crashed meanwhile dies like the others: API Gateway answers 502."""
        try:
            return wiring.handler("worker-api")(event, context, control=self.cp)
        except ControlPlaneStopped as stopped:
            raise RuntimeError(str(stopped)) from None

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

    def stop(self) -> None:
        self._stop.set()
        if self.generation is not None:
            self.generation.stop.set()
        for instance in list(self.instances.values()):
            self._kill(instance)
        for thread in [*self._threads, *(self.generation.threads if self.generation else [])]:
            thread.join(timeout=5)
        self.metadata.stop()
        self.worker_gateway.stop()
        self.moto.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)

    def _guarded(self, handler: Callable[..., Any], name: str,
                 generation: Generation) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        lock = generation.lock(name)

        def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
            with lock:
                try:
                    return handler(event, context, control=generation.cp)
                except Exception:
                    # A crashed invocation: Lambda would retry the whole batch after the visibility timeout.
                    self.counters.handler_errors += 1
                    log.exception("%s handler failed", name)
                    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
        return invoke

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

    def _run_scheduled(self, scheduled: wiring.Scheduled, generation: Generation) -> None:
        with generation.lock(scheduled.function.key):
            scheduled.handler(wiring.scheduled_event(scheduled.function, REGION, ACCOUNT),
                              wiring.lambda_context(scheduled.function), control=generation.cp)

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
        self.metadata.register(instance.instance_id, instance.instance_type, instance.zone)
        home = self.options.root / "instances" / instance.instance_id
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")},
            **{k: v for k, v in self.env.items() if k.startswith("SPOTRUN_") or k == "AWS_REGION"},
            "AWS_ENDPOINT_URL": self.endpoint, **self._instance_identity(instance),
            EnvVar.WORKER_API_URL: self.worker_gateway.url,
            "SPOTRUN_IMDS_ENDPOINT": self.metadata.endpoint(instance.instance_id),
            "SPOTRUN_WORK_ROOT": str(WORK_PATH),  # in the instance's mount namespace: its own instances/<id>/work
            "SPOTRUN_HEARTBEAT_SECONDS": str(self.options.heartbeat_seconds),
            "SPOTRUN_METADATA_POLL_SECONDS": "0.5",
            "SPOTRUN_HANDOVER_WAIT_SECONDS": str(self.options.warning_seconds + 5),
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
        instance.reclaim_at = None
        self.ec2.terminate_instances(InstanceIds=[instance.instance_id])
        self._kill(instance)
        self._put_event("EC2 Instance State-change Notification",
                        {"instance-id": instance.instance_id, "state": "terminated"})
        self.counters.reclaims += 1
        self.counters.events.append({"kind": "reclaim", "instance": instance.instance_id, "zone": instance.zone,
                                     "at": time.time()})

    def _put_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Through EventBridge (moto), so the rules' patterns route it to the interruptions queue."""
        self.events.put_events(Entries=[{"Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail),
                                         "Resources": [f"arn:aws:ec2:{REGION}:000000000000:instance/{detail['instance-id']}"]}])


def _replace(settings: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(settings, **changes)


