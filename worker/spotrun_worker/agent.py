"""The worker agent: the only long-running code of spotrun, one per instance.

On boot it learns its instance id from the metadata service and its attempt from the store, waits
for an interrupted predecessor to hand over (its final checkpoint), claims the task with the
attempt's fencing token, stages inputs, restores the newest committed checkpoint, and runs the
program under its checkpointer. Until the program ends it heartbeats, polls the metadata service for
a reclaim, reads the task's desired state on each heartbeat tick, and checkpoints on its interval.
On exit it uploads outputs and the log and reports the program's result and the attempt's outcome
separately. Anything that goes wrong in the agent itself is reported as an environment fault.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spotrun.attempts import ClaimRefused
from spotrun.domain.messages import CompletionReport, Heartbeat, ProgramResult
from spotrun.domain.model import Desired, Task, TaskState
from spotrun.domain.spec import JobSpec
from spotrun_worker import checkpointers, interval, transfer
from spotrun_worker.checkpointers.base import CheckpointError
from spotrun_worker.imds import Imds
from spotrun_worker.routes import Assignment

log = logging.getLogger("spotrun.agent")

LOG_TAIL_BYTES = 4096
FINAL_CHECKPOINT_MARGIN_SECONDS = 10
# A periodic checkpoint that fails is retried at the next interval; this many in a row end the attempt.
MAX_FAILED_PERIODIC_CHECKPOINTS = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AgentConfig:
    table: str
    bucket: str
    heartbeat_queue_url: str
    report_queue_url: str
    region: str = "us-east-1"
    work_root: Path = Path("/var/lib/spotrun/work")
    # A heartbeat a minute: liveness for the reaper (stale after 3 min) and progress for users; each
    # one is an SQS message, a Lambda share and a DynamoDB write (bench/results/scale.json: cost).
    heartbeat_seconds: float = 60.0
    # How often the agent reads its task's desired state (cancel, suspend, checkpoint now): one
    # read, no write; half the heartbeat interval unless set.
    control_poll_seconds: float | None = None
    metadata_poll_seconds: float = 5.0
    claim_wait_seconds: float = 180.0
    handover_wait_seconds: float = 150.0
    checkpoint_timeout_seconds: float = 90.0
    min_checkpoint_interval: float = 30.0
    terminate_on_exit: bool = True
    reuse_instances: bool = True
    reuse_wait_seconds: float = 30.0
    worker_api_url: str = ""  # the worker routes (`POST <url>/worker/<operation>`)

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> AgentConfig:
        return cls(
            table=env["SPOTRUN_TABLE"], bucket=env["SPOTRUN_BUCKET"],
            heartbeat_queue_url=env["SPOTRUN_HEARTBEAT_QUEUE_URL"], report_queue_url=env["SPOTRUN_REPORT_QUEUE_URL"],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            work_root=Path(env.get("SPOTRUN_WORK_ROOT", "/var/lib/spotrun/work")),
            heartbeat_seconds=float(env.get("SPOTRUN_HEARTBEAT_SECONDS", 60)),
            control_poll_seconds=float(env["SPOTRUN_CONTROL_POLL_SECONDS"]) if env.get("SPOTRUN_CONTROL_POLL_SECONDS") else None,
            metadata_poll_seconds=float(env.get("SPOTRUN_METADATA_POLL_SECONDS", 5)),
            min_checkpoint_interval=float(env.get("SPOTRUN_MIN_CHECKPOINT_INTERVAL", 30)),
            handover_wait_seconds=float(env.get("SPOTRUN_HANDOVER_WAIT_SECONDS", 150)),
            terminate_on_exit=env.get("SPOTRUN_TERMINATE_ON_EXIT", "1") == "1",
            reuse_instances=env.get("SPOTRUN_REUSE_INSTANCES", "1") == "1",
            worker_api_url=env.get("SPOTRUN_WORKER_API_URL", ""),
        )


@dataclass
class CheckpointCost:
    """Measured capture + upload seconds, for the adaptive interval and the benchmarks."""

    samples: list[float] = field(default_factory=list)
    bytes_total: int = 0

    @property
    def mean(self) -> float:
        return sum(self.samples[-5:]) / len(self.samples[-5:]) if self.samples else 0.0


class Agent:
    def __init__(self, config: AgentConfig, routes: Any, imds: Imds, ec2: Any = None,
                 clock: Callable[[], datetime] = utcnow, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.routes = routes  # spotrun_worker.routes: the worker routes and the task's own clients
        routes.configure(config.table)
        self.ec2 = ec2
        self.imds = imds
        self.clock = clock
        self.sleep = sleep
        self.cost = CheckpointCost()
        self.last_saved_at = time.monotonic()  # when the program's progress was last safe in a commit
        self.frozen_at: float | None = None
        self.restored_seq: int | None = None
        self.checkpoints_taken = 0

    # The task's own items, files and queues, through clients confined to the task the routes named.
    @property
    def store(self) -> Any:
        return self.routes.store

    @property
    def s3(self) -> Any:
        return self.routes.s3

    @property
    def sqs(self) -> Any:
        return self.routes.sqs

    # ------------------------------------------------------------------ life

    def run(self) -> int:
        instance_id = self.imds.instance_id()
        assignment = self._find_attempt(instance_id)
        if assignment is None:
            log.error("no attempt names instance %s; exiting", instance_id)
            return 3
        while True:
            self.next_assignment: Assignment | None = None
            self.frozen_at = None
            code = self._serve(assignment)
            if self.next_assignment is None:
                return code
            assignment = self.next_assignment  # this instance took the job's next queued task: no new boot
            self.cost = CheckpointCost()

    def _serve(self, assignment: Assignment) -> int:
        self.ref = assignment.ref
        self.spec = JobSpec.model_validate(assignment.spec)
        task = self.store.get_task(self.ref.job_id, self.ref.index)
        self._await_handover(task)
        try:
            self.routes.claim(self.ref)
            task = self.store.get_task(self.ref.job_id, self.ref.index)
        except ClaimRefused as refused:
            log.warning("claim refused: %s", refused)
            self._terminate_self()
            return 0
        try:
            return self._run_claimed(task)
        except Exception as error:  # noqa: BLE001 - the agent's own failure is the environment's fault
            log.exception("agent failure")
            self._report("environment_error", reason=f"agent failure: {type(error).__name__}: {error}"[:2000])
            self._terminate_self()
            return 4

    def _run_claimed(self, task: Task) -> int:
        self.workdir = self.config.work_root / self.ref.job_id / str(self.ref.index)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / ".spotrun"
        self.state_dir.mkdir(exist_ok=True)
        self.log_path = self.state_dir / f"attempt-{self.ref.attempt}.log"
        self.progress_path = self.state_dir / "progress"

        try:
            self._stage_inputs(task)
        except transfer.TransferError as error:
            self._report("input_error", reason=str(error))
            self._terminate_self()
            return 0
        restore_dir = self._restore(task)
        env = self._program_env(task)
        if self.spec.setup:
            code = subprocess.call(["/bin/sh", "-c", self.spec.setup], cwd=self.workdir, env=env,
                                   stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
            if code != 0:
                self._report("completed", program=ProgramResult(exit_code=code, log_tail=self._log_tail()),
                             reason=f"setup exited with code {code}")
                self._terminate_self()
                return 0

        method = self.spec.checkpoint.method
        self.checkpointer = checkpointers.make_checkpointer(method, signal_name=self.spec.checkpoint.signal)
        command = self._command(task)
        started = time.monotonic()
        self.checkpointer.start(command, env, self.workdir, self.log_path, restore_from=restore_dir)
        self.last_saved_at = time.monotonic()  # the restored checkpoint (or nothing) is all there is so far
        outcome = self._supervise(task)
        exec_seconds = time.monotonic() - started
        if outcome is not None:
            return outcome
        status = self.checkpointer.poll()
        self._upload_outputs(task)
        program = ProgramResult(
            exit_code=status if status is not None and status >= 0 else None,
            signal=-status if status is not None and status < 0 else None,
            log_tail=self._log_tail(), exec_seconds=exec_seconds,
        )
        reusable = task.kind == "task" and self.config.reuse_instances
        self._report("completed", program=program, keep_instance=reusable)
        if reusable:
            self.next_assignment = self._take_next_task()
        if self.next_assignment is None:
            self._terminate_self()
        return 0

    def _supervise(self, task: Task) -> int | None:
        """Watch the program until it exits (None) or the attempt must end early (exit code of the agent)."""
        now = time.monotonic()
        next_heartbeat = now
        next_control = now
        control_every = self.config.control_poll_seconds or self.config.heartbeat_seconds / 2
        next_metadata = now
        next_checkpoint = now + self._interval()
        last_checkpoint_at = self.clock()
        failed_checkpoints = 0
        while True:
            if self.checkpointer.poll() is not None:
                return None
            now = time.monotonic()
            if now >= next_metadata:
                next_metadata = now + self.config.metadata_poll_seconds
                action = self._reclaim_notice()
                if action is not None:
                    return self._leave("interrupted", f"spot {action.get('action', 'reclaim')} notice", action.get("deadline"))
            if now >= next_heartbeat:
                next_heartbeat = now + self.config.heartbeat_seconds
                self._heartbeat()
            if now >= next_control:
                next_control = now + control_every
                current = self.store.get_task(self.ref.job_id, self.ref.index)
                if current is None:
                    return self._leave("cancelled", "task removed", None, checkpoint=False)
                if current.attempt != self.ref.attempt:
                    if current.draining_attempt == self.ref.attempt:
                        # The control plane already launched the replacement: hand over with a final checkpoint.
                        return self._leave("interrupted", "replaced after an interruption notice", None)
                    return self._abandon("attempt superseded")
                if current.state != TaskState.RUNNING:
                    return self._abandon(f"task is {current.state}")
                if current.desired == Desired.CANCEL:
                    return self._leave("cancelled", "cancelled by the user", None, checkpoint=False)
                if current.desired == Desired.SUSPEND:
                    return self._leave("suspended", "suspended by the user", None)
                requested = current.checkpoint_requested_at
                if requested is not None and requested > last_checkpoint_at:
                    next_checkpoint = now  # rebalance recommendation or user request: checkpoint early
            if now >= next_checkpoint and self.checkpointer.supports_checkpoint:
                try:
                    self._checkpoint()
                    failed_checkpoints = 0
                except (CheckpointError, transfer.TransferError):
                    if self.checkpointer.poll() is not None:
                        return None  # the program ended as it was asked for its state: its result counts
                    failed_checkpoints += 1
                    if failed_checkpoints >= MAX_FAILED_PERIODIC_CHECKPOINTS:
                        raise
                    # The committed checkpoint still stands; try again at the next interval.
                    log.warning("periodic checkpoint failed (%d in a row)", failed_checkpoints, exc_info=True)
                last_checkpoint_at = self.clock()
                next_checkpoint = time.monotonic() + self._interval()
            self.sleep(0.2)

    def _leave(self, outcome: str, reason: str, deadline: datetime | None, checkpoint: bool = True) -> int:
        """End the attempt early: final checkpoint if there is time, report, stop the program."""
        seq = None
        if checkpoint and self.checkpointer.supports_checkpoint and self.checkpointer.poll() is None:
            budget = self.config.checkpoint_timeout_seconds
            if deadline is not None:
                budget = max(1.0, (deadline - self.clock()).total_seconds() - FINAL_CHECKPOINT_MARGIN_SECONDS)
            try:
                seq = self._checkpoint(timeout=budget, final=True)
            except Exception:  # noqa: BLE001 - the last committed checkpoint still stands
                log.exception("final checkpoint failed")
        # Nothing the program did after it was frozen can be lost: it did nothing.
        unsaved = (self.frozen_at or time.monotonic()) - self.last_saved_at
        self._stop_program()
        self._upload_log()
        self._report(outcome, reason=reason, checkpoint_seq=seq,
                     unsaved_seconds=unsaved if self.checkpointer.supports_checkpoint else None)
        if outcome != "interrupted":
            self._terminate_self()
        return 0

    def _freeze(self) -> None:
        """Stop the program dead right after its final capture, so no progress follows the checkpoint
        (DMTCP suspends its processes the same way while it writes an image)."""
        pid = self.checkpointer.pid
        if pid is None:
            return
        try:
            os.killpg(os.getpgid(pid), signal.SIGSTOP)
            self.frozen_at = time.monotonic()
        except ProcessLookupError:
            pass

    def _stop_program(self) -> None:
        pid = self.checkpointer.pid
        if self.frozen_at is not None and pid is not None:
            with contextlib.suppress(ProcessLookupError):  # a stopped process only yields to SIGKILL
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        self.checkpointer.stop()

    def _abandon(self, reason: str) -> int:
        log.warning("abandoning attempt %s: %s", self.ref.attempt, reason)
        self.checkpointer.stop()
        self._terminate_self()
        return 0

    # ------------------------------------------------------------- handover

    def _find_attempt(self, instance_id: str) -> Assignment | None:
        deadline = time.monotonic() + self.config.claim_wait_seconds
        while time.monotonic() < deadline:
            assignment = self.routes.session()
            if assignment is not None:
                return assignment
            self.sleep(1.0)
        return None

    def _await_handover(self, task: Task | None) -> None:
        """Let an interrupted predecessor commit its final checkpoint before this attempt restores."""
        if task is None or task.draining_attempt is None or task.draining_attempt == self.ref.attempt:
            return
        # The predecessor's attempt record ends when this attempt is admitted (TaskReplacing); it has
        # handed over once its final report arrived (drained), after its final checkpoint's commit.
        deadline = time.monotonic() + self.config.handover_wait_seconds
        while time.monotonic() < deadline:
            before = [a for a in self.store.attempts(task.job_id, task.index) if a.number == task.draining_attempt]
            if before and before[0].drained_at is not None:
                return
            current = self.store.get_task(task.job_id, task.index)
            if current is None or current.draining_attempt != task.draining_attempt:
                return
            self.sleep(0.5)
        log.warning("predecessor attempt %s did not hand over in time", task.draining_attempt)

    # ---------------------------------------------------------- checkpoints

    def _checkpoint_prefix(self, seq: int) -> str:
        return f"checkpoints/{self.ref.job_id}/{self.ref.index}/{seq:08d}"

    def _checkpoint(self, timeout: float | None = None, final: bool = False) -> int | None:
        """Capture, upload files, write the manifest, then move the pointer; keep the previous one."""
        started = time.monotonic()
        current = self.store.get_task(self.ref.job_id, self.ref.index)
        seq = (current.checkpoint.seq if current and current.checkpoint else 0) + 1
        into = self.state_dir / "outgoing" / str(seq)
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        files = self.checkpointer.checkpoint(into, timeout or self.config.checkpoint_timeout_seconds)
        captured_at = time.monotonic()  # the program's state as of now is in `files`
        if final:
            self._freeze()
        prefix = self._checkpoint_prefix(seq)
        entries = transfer.upload_files(self.s3, self.config.bucket, f"{prefix}/files", files, into)
        size = sum(e.size for e in entries)
        manifest = {
            "seq": seq, "job_id": self.ref.job_id, "index": self.ref.index, "attempt": self.ref.attempt,
            "method": self.checkpointer.method, "files": [e.__dict__ for e in entries], "bytes": size,
            "facts": checkpointers.environment_facts(), "created_at": self.clock().isoformat(),
        }
        self.s3.put_object(Bucket=self.config.bucket, Key=f"{prefix}/manifest.json",
                           Body=json.dumps(manifest).encode(), ContentType="application/json")
        committed = self.routes.commit(self.ref, seq, size, self.checkpointer.method, self.clock())
        shutil.rmtree(into, ignore_errors=True)
        if not committed:
            log.warning("checkpoint %s was not committed (superseded or out of order)", seq)
            return None
        self.last_saved_at = captured_at
        self.cost.samples.append(time.monotonic() - started)
        self.cost.bytes_total += size
        self.checkpoints_taken += 1
        self._forget_old_checkpoints(seq)
        return seq

    def _take_next_task(self) -> Assignment | None:
        """Instance reuse: ask the control plane for the job's next queued task instead of terminating.

        It answers "ask again" until the finisher has ended the task just reported (so the job's
        concurrency count has room again); a new task comes with its own task credentials.
        """
        deadline = time.monotonic() + self.config.reuse_wait_seconds
        while True:
            got, ask_again = self.routes.next(self.ref)
            if got:
                assignment = self.routes.session()
                if assignment is not None:
                    log.info("instance reused for task %s attempt %s", assignment.ref.index, assignment.ref.attempt)
                return assignment
            if not ask_again or time.monotonic() > deadline:
                return None
            self.sleep(0.3)

    def _forget_old_checkpoints(self, committed: int) -> None:
        """Keep the committed checkpoint and the one before it; older ones are no longer needed."""
        prefix = f"checkpoints/{self.ref.job_id}/{self.ref.index}/"
        old = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                part = item["Key"][len(prefix):].split("/", 1)[0]
                if part.isdigit() and int(part) < committed - 1:
                    old.append({"Key": item["Key"]})
        for start in range(0, len(old), 1000):
            self.s3.delete_objects(Bucket=self.config.bucket, Delete={"Objects": old[start:start + 1000], "Quiet": True})

    def _restore(self, task: Task) -> Path | None:
        """Download the committed checkpoint the task's pointer names, verifying every file."""
        pointer = self.store.get_task(task.job_id, task.index).checkpoint
        if pointer is None:
            return None
        raw = self.s3.get_object(Bucket=self.config.bucket, Key=f"{pointer.key}/manifest.json")["Body"].read()
        manifest = json.loads(raw)
        ok, why = checkpointers.compatible(manifest.get("facts", {}), checkpointers.environment_facts(), manifest["method"])
        if not ok:
            raise RuntimeError(f"checkpoint {pointer.seq} cannot be restored here: {why}")
        target = self.state_dir / "incoming" / str(pointer.seq)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for entry in manifest["files"]:
            transfer.download_file(self.s3, self.config.bucket, f"{pointer.key}/files/{entry['name']}",
                                   target / entry["name"], expected_size=entry["size"], expected_sha256=entry["sha256"])
        self.restored_seq = pointer.seq
        self.routes.restored(self.ref, pointer.seq, pointer.attempt)
        return target

    def _interval(self) -> float:
        fixed = self.spec.checkpoint.interval
        if fixed != "auto":
            return float(fixed)
        return interval.checkpoint_interval(
            cost_seconds=self.cost.mean or 5.0, interruptions_per_hour=0.1, minimum=self.config.min_checkpoint_interval,
        )

    # ------------------------------------------------------------- signals

    def _reclaim_notice(self) -> dict[str, Any] | None:
        try:
            return self.imds.spot_action()
        except Exception:  # noqa: BLE001 - a metadata hiccup is not a reclaim
            log.warning("metadata poll failed", exc_info=True)
            return None

    def _heartbeat(self) -> None:
        progress = None
        with contextlib.suppress(OSError, ValueError):
            progress = min(1.0, max(0.0, float(self.progress_path.read_text().strip())))
        beat = Heartbeat(job_id=self.ref.job_id, index=self.ref.index, attempt=self.ref.attempt,
                         instance_id=self.ref.instance_id, sent_at=self.clock(), progress=progress)
        try:
            self.sqs.send_message(QueueUrl=self.config.heartbeat_queue_url, MessageBody=beat.model_dump_json())
        except Exception:  # noqa: BLE001 - a lost heartbeat is survivable; the reaper confirms with EC2
            log.warning("heartbeat not sent", exc_info=True)

    def _report(self, outcome: str, reason: str = "", program: ProgramResult | None = None,
                checkpoint_seq: int | None = None, unsaved_seconds: float | None = None,
                keep_instance: bool = False) -> None:
        report = CompletionReport(
            job_id=self.ref.job_id, index=self.ref.index, attempt=self.ref.attempt, instance_id=self.ref.instance_id,
            sent_at=self.clock(), outcome=outcome, reason=reason[:2048], program=program, checkpoint_seq=checkpoint_seq,
            unsaved_seconds=unsaved_seconds, keep_instance=keep_instance,
        )
        for attempt in range(5):
            try:
                self.sqs.send_message(QueueUrl=self.config.report_queue_url, MessageBody=report.model_dump_json())
                return
            except Exception:  # noqa: BLE001 - transient: retry the step, not the task
                log.warning("report not sent (try %d)", attempt + 1, exc_info=True)
                self.sleep(0.5 * 2**attempt)

    def _terminate_self(self) -> None:
        if self.ec2 is None or not self.config.terminate_on_exit:
            return
        try:
            self.ec2.terminate_instances(InstanceIds=[self.ref.instance_id])
        except Exception:  # noqa: BLE001 - the reaper terminates orphans anyway
            log.warning("could not terminate own instance", exc_info=True)

    # ------------------------------------------------------- files and env

    def _program_env(self, task: Task) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTRUN_", "AWS_SECRET", "AWS_SESSION"))}
        env.update(self.store.task_environment(task.job_id, task.index) or {})
        count = self.spec.task_count
        env.update({
            "SPOTRUN_JOB_ID": task.job_id, "SPOTRUN_TASK_INDEX": str(task.index), "SPOTRUN_TASK_COUNT": str(count),
            "SPOTRUN_ATTEMPT": str(self.ref.attempt), "SPOTRUN_WORK_DIR": str(self.workdir),
            "SPOTRUN_PROGRESS_FILE": str(self.progress_path),
        })
        if task.kind == "combine":
            env["SPOTRUN_TASK_OUTPUTS"] = str(self.workdir / "task-outputs")
        return env

    def _command(self, task: Task) -> str | list[str]:
        if task.kind == "combine" and self.spec.combine is not None:
            return self.spec.combine.command
        return self.spec.command

    def _stage_inputs(self, task: Task) -> None:
        inputs = self.workdir / "inputs"
        for uri in self.spec.inputs:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            transfer.download_file(self.s3, bucket, key, inputs / Path(key).name)
        if task.kind == "combine":
            self._stage_task_outputs()

    def _stage_task_outputs(self) -> None:
        """The combine task sees every task's outputs under task-outputs/<index>/, with a manifest."""
        prefix = f"jobs/{self.ref.job_id}/outputs/"
        target = self.workdir / "task-outputs"
        listing = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):]
                if relative.split("/", 1)[0] == str(self.ref.index):
                    continue
                transfer.download_file(self.s3, self.config.bucket, item["Key"], target / relative,
                                       expected_size=item["Size"])
                listing.append({"path": relative, "bytes": item["Size"]})
        target.mkdir(parents=True, exist_ok=True)
        (target / "manifest.json").write_text(json.dumps({"outputs": listing}, indent=1))

    def _output_patterns(self, task: Task) -> list[str]:
        if task.kind == "combine" and self.spec.combine is not None:
            return list(self.spec.combine.outputs)
        return list(self.spec.outputs)

    def _upload_outputs(self, task: Task) -> None:
        files: list[Path] = []
        for pattern in self._output_patterns(task):
            for match in sorted(glob.glob(str(self.workdir / pattern), recursive=True)):
                path = Path(match)
                if path.is_file() and self.workdir in path.resolve().parents:
                    files.append(path)
        if files:
            transfer.upload_files(self.s3, self.config.bucket, f"jobs/{self.ref.job_id}/outputs/{self.ref.index}",
                                  files, self.workdir)
        self._upload_log()

    def _upload_log(self) -> None:
        if self.log_path.exists():
            self.s3.upload_file(str(self.log_path), self.config.bucket,
                                f"jobs/{self.ref.job_id}/logs/{self.ref.index}/attempt-{self.ref.attempt}.log")

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


def main() -> int:
    import boto3
    from botocore.config import Config

    from spotrun_worker.routes import HttpRoutes

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = AgentConfig.from_env()
    session = boto3.session.Session()
    retry = Config(retries={"mode": "standard", "max_attempts": 8})

    def client(name: str) -> Any:
        return session.client(name, region_name=config.region, config=retry)

    if not config.worker_api_url:
        log.error("SPOTRUN_WORKER_API_URL is not set: the agent reaches the control plane only through the worker routes")
        return 2
    # The instance's own credentials sign the worker routes and end the instance; everything the task
    # touches goes through the task credentials the routes hand out.
    routes = HttpRoutes(config.worker_api_url, session, config.region, client_config=retry)
    agent = Agent(config, routes, Imds(), ec2=client("ec2"))
    log.info("agent starting on %s (%s)", platform.node(), platform.machine())
    return agent.run()

