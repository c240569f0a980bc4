"""Part 3: the AWS requests of one task's life, driven through the real handlers on moto.

submit (API handler) -> scheduler (SNS -> SQS) admits and launches -> instance pending/running
events (EventBridge -> SQS) -> the agent's boot: its `session` and `claim` worker-route calls and its own
reads -> N heartbeats (the agent's own UpdateItem of its task's beat, and its two eventually consistent
reads of its desired state per interval) -> one credential renewal (a `session` call) -> one checkpoint
commit (a `checkpoint` call) -> completion report (SQS -> finisher, which terminates, refreshes the job and
wakes the scheduler, whose reconcile admits the next queued task) -> the instance's state-change events
(those the stack's rule passes) -> one reaper sweep. With instance reuse: the report, then the `next`,
`session` and `claim` calls of the next task on the same instance.

Measured: every DynamoDB, EC2, SNS and SQS request, by phase and by who made it (function or agent),
the messages each queue delivered and the handler invocations (the test loop's pumps deliver in
batches of at most 10, as a lightly loaded Lambda event source does). The agent is a stand-in that
makes the same store, queue and worker-route calls as spotrun_worker.agent (Agent.run, Supervisor.watch
per tick, CheckpointCycle.take, Agent.report, Agent._take_next_task), without a program, S3 or metadata
service; each worker-route call is an invocation of the real worker-api handler (its STS and CloudWatch
Logs calls counted too) with the event its function URL delivers.
Also measured: the bytes of structured log lines the handlers write (Powertools logger at INFO, the
deployed default). Estimated: DynamoDB request units (bench.scale.meter). Run twice: a one-task job, and the steady
state of a large job (many queued tasks, a concurrency cap), where every completion makes the
scheduler reconcile a job with a thousand queued tasks.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.scale import model
from bench.scale.meter import CallLog, CountingClient, MeteredDynamo, Units
from bench.scale.plane import MotoPlane, job_spec, moto_image, moto_plane, moto_session
from spotrun import resources
from spotrun.adapters.dynamo import DynamoStore
from spotrun.domain.messages import AttemptRef, CompletionReport, ProgramResult
from spotrun.domain.model import TaskState
from spotrun.handlers import reaper
from spotrun.handlers.common import logger

CONTROL_POLLS_PER_HEARTBEAT = 2  # spotrun_worker.agent: control_poll_seconds defaults to heartbeat_seconds / 2
LOG_TAIL_BYTES = 4096  # the agent sends up to this much of the program's log with its report
QUEUE_FUNCTION = {"scheduler": "scheduler", "reports": "finisher", "interruptions": "interruption"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Lifecycle:
    """The Loop of tests/integration/test_task_flow.py with counting around every handler and the agent."""

    def __init__(self, plane: MotoPlane, clock: Clock):
        from tests.integration.test_task_flow import Loop
        from tests.support import LambdaContextStub

        self.plane, self.clock, self.cp = plane, clock, plane.cp
        self.loop = Loop(plane.cp, plane.env, plane.session, LambdaContextStub())
        self.events = plane.session.client("events", region_name="us-east-1")
        self.agent_sqs = CountingClient(plane.session.client("sqs", region_name="us-east-1"), "sqs", plane.log)
        agent_dynamo = MeteredDynamo(plane.session.client("dynamodb", region_name="us-east-1"), plane.log, moto_image)
        self.agent_store = DynamoStore(agent_dynamo, self.cp.settings.table)
        # The worker-api function's own calls beside DynamoDB: task credentials (STS) and the attempt's log stream.
        self.cp.credentials.client = CountingClient(self.cp.credentials.client, "sts", plane.log)
        self.cp.logs.client = CountingClient(self.cp.logs.client, "logs", plane.log)
        self.clients = [self.cp.store.client, self.cp.compute.client, self.cp.bus.client, self.agent_sqs, agent_dynamo,
                        self.cp.credentials.client, self.cp.logs.client]
        self.messages: Counter[str] = Counter()
        self.invocations: Counter[str] = Counter()
        self.log_bytes: Counter[str] = Counter()
        self._logger, self._level = logger, logger.log_level
        self._stream = logger.registered_handler.setStream(_ByteCounter(self))
        logger.setLevel("INFO")
        for queue, pump in self.loop.pumps.items():
            pump.handler = self._counted(queue, pump.handler)
        self.phases: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self._logger.registered_handler.setStream(self._stream)
        self._logger.setLevel(self._level)

    def _counted(self, queue: str, handler: Any) -> Any:
        def deliver(event: dict[str, Any], context: Any) -> Any:
            function = QUEUE_FUNCTION[queue]
            self.messages[queue] += len(event["Records"])
            self.invocations[function] += 1
            with self.acting(function):
                return handler(event, context)
        return deliver

    @property
    def log(self) -> CallLog:
        return self.plane.log

    def phase(self, name: str, step: Any, repeat: int = 1) -> Any:
        """Run `step` with fresh counters; record what it cost (per repetition)."""
        log = CallLog()
        for client in self.clients:
            client.log = log
        self.plane.log = log
        for counter in (self.messages, self.invocations, self.log_bytes):
            counter.clear()
        result = None
        for _ in range(repeat):
            result = step()
        self.phases[name] = summarize(log, self.messages, self.invocations, self.log_bytes, repeat)
        return result

    @contextlib.contextmanager
    def acting(self, actor: str) -> Iterator[None]:
        """Requests made inside are attributed to `actor` (a function's name, or 'agent')."""
        previous, self.log.actor = self.log.actor, actor
        try:
            yield
        finally:
            self.log.actor = previous

    def route(self, instance_id: str, operation: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One worker-route call of the agent: the worker-api function invoked as its function URL invokes it,
        signed by the instance's role session (the session name is the instance id)."""
        from spotrun.handlers import worker_api
        from tests.support import function_url_event

        caller = f"arn:aws:sts::123456789012:assumed-role/{self.cp.settings.instance_role_name}/{instance_id}"
        event = function_url_event("POST", f"/worker/{operation}", body or {}, signer=caller)
        self.invocations["worker-api"] += 1
        with self.acting("worker-api"):
            answer = worker_api.handler(event, self.loop.context, control=self.cp)
        assert answer["statusCode"] == 200, answer
        return dict(json.loads(answer["body"]))

    def event(self, instance_id: str, state: str) -> None:
        """An EC2 state-change notification, put on moto's EventBridge: the stack's rules (spotrun.provision
        made them from spotrun.resources) decide whether it reaches the interruptions queue."""
        self.events.put_events(Entries=[{
            "Source": "aws.ec2", "DetailType": "EC2 Instance State-change Notification", "Time": self.clock(),
            "Detail": json.dumps({"instance-id": instance_id, "state": state}),
            "Resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"]}])


class _ByteCounter(io.TextIOBase):
    """The logger's stream: counts the bytes each actor logs, keeps nothing."""

    def __init__(self, life: Lifecycle):
        self.life = life

    def write(self, text: str) -> int:
        self.life.log_bytes[self.life.log.actor] += len(text.encode())
        return len(text)


def summarize(log: CallLog, messages: Counter[str], invocations: Counter[str], log_bytes: Counter[str],
              repeat: int) -> dict[str, Any]:
    actors = sorted({c.actor for c in log.calls} | set(log.units) | set(invocations) | set(log_bytes))
    by_actor = {}
    for actor in actors:
        calls = [c for c in log.calls if c.actor == actor]
        units = log.units.get(actor, Units())
        by_actor[actor or "client"] = {
            "requests": {k: v / repeat for k, v in Counter(f"{c.service}:{c.operation}" for c in calls).items()},
            "dynamodb_units": {"wru": units.wru / repeat, "gsi_wru": units.gsi_wru / repeat, "rru": units.rru / repeat},
            "modeled_call_seconds": round(sum(model.latency(c.service, c.operation) for c in calls) / repeat, 4),
            "invocations": invocations.get(actor, 0) / repeat,
            "log_bytes": log_bytes.get(actor, 0) / repeat,
        }
    return {"by_actor": by_actor, "queue_messages": {k: v / repeat for k, v in messages.items()}, "repeat": repeat}


def drive(tasks: int, max_concurrency: int, heartbeats: int = 5, heartbeat_seconds: float = 60.0) -> dict[str, Any]:
    clock = Clock()
    with moto_session() as session:
        plane = moto_plane(session, metered=True, account_max=1_000, pool_max=1_000, clock=clock)
        life = Lifecycle(plane, clock)
        loop, store = life.loop, life.agent_store

        def submit() -> str:
            life.invocations["api"] += 1
            with life.acting("api"):
                status, body = loop.api("POST", "/jobs", job_spec(tasks, max_concurrency=max_concurrency))
            assert status == 202, body
            return body["job_id"]

        job_id = life.phase("submit", submit)
        life.phase("initial_admission", loop.drain)
        task = min(life.cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, max_concurrency), key=lambda t: t.index)
        ref = AttemptRef(job_id=job_id, index=task.index, attempt=task.attempt, instance_id=task.instance_id)

        def boot_and_claim() -> None:
            for state in ("pending", "running"):
                life.event(ref.instance_id, state)
            loop.drain()
            boot(ref)

        def boot(at: AttemptRef) -> None:  # Agent.run and _run_claimed, up to the program's start
            assert life.route(at.instance_id, "session")["attempt"] == at.attempt
            with life.acting("agent"):
                store.get_task(job_id, at.index)  # _serve: the predecessor's handover
            assert life.route(at.instance_id, "claim", {"attempt": at.attempt})["claimed"]
            with life.acting("agent"):
                store.get_task(job_id, at.index)  # the claimed task, whose checkpoint pointer _restore reads
                store.task_environment(job_id, at.index)

        life.phase("boot_and_claim", boot_and_claim)
        progress = iter(range(1, 1_000))

        def heartbeat() -> None:  # Supervisor.watch over one heartbeat interval (Agent.heartbeat writes the beat)
            clock.advance(heartbeat_seconds)
            with life.acting("agent"):
                assert store.record_beat(job_id, ref.index, ref.attempt, clock(), next(progress) / 1_000)
                for _ in range(CONTROL_POLLS_PER_HEARTBEAT):  # it reads its desired state every half interval
                    store.get_task(job_id, ref.index, consistent=False)
            loop.drain()

        life.phase("heartbeat", heartbeat, repeat=heartbeats)

        def credential_renewal() -> None:  # botocore refreshes the task credentials 15 minutes before they end
            assert life.route(ref.instance_id, "session")["attempt"] == ref.attempt

        life.phase("credential_renewal", credential_renewal)

        def checkpoint() -> None:  # Agent._checkpoint; its files and manifest go to S3 first (not counted)
            with life.acting("agent"):
                current = store.get_task(job_id, ref.index)
            seq = (current.checkpoint.seq if current and current.checkpoint else 0) + 1
            assert life.route(ref.instance_id, "checkpoint", {
                "attempt": ref.attempt, "seq": seq, "size_bytes": 50 * 2**20, "method": "signal",
                "committed_at": clock().isoformat(), "seconds": 4.0})["committed"]

        life.phase("checkpoint", checkpoint)

        def completion_with_reuse() -> None:
            """The agent's report with keep_instance, then Agent._take_next_task and the next claim on
            the same instance (no launch, no boot): a sweep's steady state with instance reuse."""
            nonlocal ref
            clock.advance(30)
            report = CompletionReport(
                job_id=job_id, index=ref.index, attempt=ref.attempt, instance_id=ref.instance_id, sent_at=clock(),
                outcome="completed", program=ProgramResult(exit_code=0, exec_seconds=600.0, log_tail="x" * LOG_TAIL_BYTES),
                keep_instance=True,
            )
            with life.acting("agent"):
                life.agent_sqs.send_message(QueueUrl=loop.urls["reports"], MessageBody=report.model_dump_json())
            loop.drain()  # the finisher ends the task first, so `next` finds room at once (no "ask again")
            answer = life.route(ref.instance_id, "next", {"attempt": ref.attempt})
            assert answer["next"] is not None, answer
            ref = AttemptRef(job_id=job_id, index=answer["next"]["index"], attempt=answer["next"]["attempt"],
                             instance_id=ref.instance_id)
            boot(ref)  # the new task's session (its own credentials), handover read, claim
            loop.drain()

        if tasks > max_concurrency:
            life.phase("completion_with_reuse", completion_with_reuse)

        def completion() -> None:  # Agent._report, then what the control plane makes of it
            clock.advance(30)
            report = CompletionReport(
                job_id=job_id, index=ref.index, attempt=ref.attempt, instance_id=ref.instance_id, sent_at=clock(),
                outcome="completed", program=ProgramResult(exit_code=0, exec_seconds=600.0, log_tail="x" * LOG_TAIL_BYTES),
            )
            with life.acting("agent"):
                life.agent_sqs.send_message(QueueUrl=loop.urls["reports"], MessageBody=report.model_dump_json())
            loop.drain()
            for state in ("shutting-down", "terminated"):
                life.event(ref.instance_id, state)
            loop.drain()

        life.phase("completion", completion)
        done, job = life.cp.store.get_task(job_id, ref.index), life.cp.store.get_job(job_id)

        def reaper_sweep() -> None:
            clock.advance(60)
            life.invocations["reaper"] += 1
            with life.acting("reaper"):
                reaper.handler({}, loop.context, control=life.cp)

        life.phase("reaper_sweep", reaper_sweep)
        life.close()

    return {
        "tasks": tasks, "max_concurrency": max_concurrency, "heartbeats_driven": heartbeats,
        "phases": life.phases,
        "active_instances_during_sweep": job.active if job else 0,
        "verified": {"task_state": done.state if done else None, "job_counts": job.counts if job else None,
                     "ok": done is not None and done.state == TaskState.SUCCEEDED  # and the reused instance's task
                     and job is not None and job.counts.get("SUCCEEDED") == (2 if tasks > max_concurrency else 1)},
    }


def run(large_tasks: int = 1_200, large_concurrency: int = 20) -> dict[str, Any]:
    return {
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "log_tail_bytes_reported": LOG_TAIL_BYTES,
        "function_memory_mb": {f.key: f.memory_mb for f in resources.FUNCTIONS},
        "one_task_job": drive(1, 1),
        "large_job_steady_state": drive(large_tasks, large_concurrency),
    }
