"""The worker agent: the only long-running code of spotrun, one per instance.

On boot it learns its instance id from the metadata service and its attempt from the worker routes,
waits for an interrupted predecessor to hand over (its final checkpoint), claims the task with the
attempt's fencing token, stages inputs (`workspace`), restores the newest committed checkpoint
(`checkpoints`), and runs the program under its checkpointer, watched by the `supervisor` until it
ends. On exit it uploads outputs and the log and reports the program's result and the attempt's
outcome separately. Anything that goes wrong in the agent itself is reported as an environment fault.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spotrun.attempts import ClaimRefused
from spotrun.domain.messages import MAX_REASON, CompletionReport, ProgramResult
from spotrun.domain.model import Task
from spotrun.domain.reasons import clip
from spotrun.domain.spec import JobSpec
from spotrun.resources import EnvVar
from spotrun_worker import bootcheck, checkpointers, finalfit, logship, transfer, workspace
from spotrun_worker.bootcheck import ImageCheck, check_image
from spotrun_worker.checkpointers import CheckpointError, CheckpointerUnavailable
from spotrun_worker.checkpoints import CheckpointCost, CheckpointCycle, restore
from spotrun_worker.config import AgentConfig
from spotrun_worker.gang import HOSTFILE_NAME, Gang, GangCheckpointCycle, rendezvous
from spotrun_worker.gang import restore_part as gang_restore
from spotrun_worker.imds import Imds
from spotrun_worker.routes import Assignment
from spotrun_worker.supervisor import FINAL_CHECKPOINT_MARGIN_SECONDS, Supervisor
from spotrun_worker.workspace import Workspace

log = logging.getLogger("spotrun.agent")
IMAGE_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")

__all__ = ["Agent", "AgentConfig", "main"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Agent:
    def __init__(self, config: AgentConfig, routes: Any, imds: Imds, ec2: Any = None,
                 clock: Callable[[], datetime] = utcnow, sleep: Callable[[float], None] = time.sleep,
                 image: ImageCheck | None = None):
        self.config = config
        self.image = image  # what this instance's image can run; checked at the start of `run` if not given
        self.routes = routes  # spotrun_worker.routes: the worker routes and the task's own clients
        routes.configure(config.table)
        self.ec2 = ec2
        self.imds = imds
        self.clock = clock
        self.sleep = sleep
        self.cost = CheckpointCost()
        self.program_started = time.monotonic()  # when the current attempt's program started

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
        if self.image is None:
            self.image = check_image(self._image_id())
        for method, problem in self.image.unavailable.items():
            log.error("this worker image cannot run checkpoint method %s: %s", method, problem)
        assignment = self._find_attempt(instance_id)
        if assignment is None:
            log.error("no attempt names instance %s; exiting", instance_id)
            return 3
        while True:
            self.next_assignment: Assignment | None = None
            code = self._serve(assignment)
            if self.next_assignment is None:
                return code
            assignment = self.next_assignment  # this instance took the job's next queued task: no new boot
            self.cost = CheckpointCost()

    def _serve(self, assignment: Assignment) -> int:
        self.ref = assignment.ref
        self.spec = JobSpec.model_validate(assignment.spec)
        problem = self.image.problem(self.spec.checkpoint.method) if self.image else None
        if problem is not None:
            return self._image_fault(problem)
        task = self.store.get_task(self.ref.job_id, self.ref.index)
        self._await_handover(task)
        try:
            if self.ref.rank > 0:  # a gang's rank 0 claims the task for all its ranks
                task = self._await_gang_claim()
            else:
                self.routes.claim(self.ref)
                task = self.store.get_task(self.ref.job_id, self.ref.index)
        except ClaimRefused as refused:
            log.warning("claim refused: %s", refused)
            self.terminate_self()
            return 0
        try:
            return self._run_claimed(task)
        except Exception as error:  # noqa: BLE001 - the agent's own failure is the environment's fault
            log.exception("agent failure")
            self.report("environment_error", reason=f"agent failure: {type(error).__name__}: {error}")
            self.terminate_self()
            return 4
        finally:
            self._stop_shipping()

    def _start_shipping(self) -> None:
        """The attempt's output and the agent's own lines, live, to the attempt's log stream."""
        self.shipper = logship.for_attempt(getattr(self.routes, "logs", None), self.config.log_group,
                                           self.ref.job_id, self.ref.index, self.ref.attempt,
                                           self.workspace.log_path, interval=self.config.log_ship_seconds)
        self.agent_lines: logship.AgentLines | None = logship.AgentLines(self.shipper)
        for name in ("spotrun.agent", "spotrun_worker"):
            logging.getLogger(name).addHandler(self.agent_lines)

    def _stop_shipping(self) -> None:
        handler = getattr(self, "agent_lines", None)
        if handler is None:
            return
        for name in ("spotrun.agent", "spotrun_worker"):
            logging.getLogger(name).removeHandler(handler)
        self.agent_lines = None
        try:
            self.shipper.close()
        except Exception:  # noqa: BLE001 - the log file still goes to S3 with the attempt
            log.warning("the last log lines were not shipped", exc_info=True)

    def _run_claimed(self, task: Task) -> int:
        self.workspace = Workspace.for_attempt(self.config.work_root, self.ref).create()
        self._start_shipping()
        log.info("attempt %s of task %s runs on instance %s", self.ref.attempt, self.ref.index, self.ref.instance_id)
        try:
            workspace.stage_inputs(self.s3, list(self.spec.inputs), self.workspace)
            if task.kind == "combine":
                workspace.stage_task_outputs(self.s3, self.config.bucket, self.ref, self.workspace)
        except transfer.TransferError as error:
            self.report("input_error", reason=str(error))
            self.terminate_self()
            return 0
        gang = self._meet_gang(task) if task.nodes > 1 else None
        restored = (gang_restore(self.routes, self.config.bucket, self.ref, task, self.workspace, task.nodes) if gang
                    else restore(self.routes, self.config.bucket, self.ref, task, self.workspace))
        env = self._program_env(task)
        if gang is not None:
            env.update(gang.environment(gang.write_hostfile(self.workspace.state_dir / HOSTFILE_NAME)))
        if self.spec.setup:
            code = subprocess.call(["/bin/sh", "-c", self.spec.setup], cwd=self.workspace.workdir, env=env,
                                   stdout=self.workspace.log_path.open("ab"), stderr=subprocess.STDOUT)
            if code != 0:
                self.report("completed", program=ProgramResult(exit_code=code, log_tail=self.workspace.log_tail()),
                            reason=f"setup exited with code {code}")
                self.terminate_self()
                return 0

        try:
            checkpointer = checkpointers.make_checkpointer(
                self.spec.checkpoint.method, signal_name=self.spec.checkpoint.signal,
                # dmtcp in a gang: every rank's processes under one coordinator, on rank 0
                gang=checkpointers.DmtcpGang(gang.rank, gang.nodes, gang.addresses[0], gang.coordinator_port)
                if gang is not None else None)
        except CheckpointerUnavailable as unavailable:  # passed the boot check, gone since: the image's fault still
            return self._image_fault(str(unavailable))
        started = self.program_started = time.monotonic()
        try:
            checkpointer.start(self._command(task), env, self.workspace.workdir, self.workspace.log_path,
                               restore_from=restored[0] if restored else None)
        except CheckpointError as error:
            # The image has the checkpointer (the boot check said so) but it would not run here: this
            # instance's fault, so its pool's; the control plane retries the task in another pool.
            self.report("environment_error", reason=f"{checkpointer.method}: could not start the program on this "
                                                    f"instance: {error}")
            self.terminate_self()
            return 4
        # The cycle starts now: the restored checkpoint (or nothing) is all that is saved so far.
        cycle_args = (self.routes, self.config.bucket, self.ref, self.spec, self.workspace, checkpointer, self.clock,
                      self.config.checkpoint_timeout_seconds, self.config.min_checkpoint_interval, self.cost)
        budget = finalfit.budget_seconds(self.config.warning_seconds, self.config.metadata_poll_seconds,
                                         FINAL_CHECKPOINT_MARGIN_SECONDS)
        cycle = (GangCheckpointCycle(*cycle_args, final_budget_seconds=budget, nodes=task.nodes) if gang
                 else CheckpointCycle(*cycle_args, final_budget_seconds=budget))
        outcome = Supervisor(self, checkpointer, cycle).watch(task)
        exec_seconds = time.monotonic() - started
        if outcome is not None:
            return outcome
        status = checkpointer.poll()
        log.info("the program ended (%s) after %.0f s", f"exit code {status}" if status is not None and status >= 0
                 else f"signal {-(status or 0)}", exec_seconds)
        # A gang's declared outputs are its rank 0's (every rank works in the same path on its own instance).
        missing = workspace.upload_outputs(self.s3, self.config.bucket, self.ref, self.workspace,
                                           self._output_patterns(task)) if self.ref.rank == 0 else []
        self.upload_log()
        program = ProgramResult(
            exit_code=status if status is not None and status >= 0 else None,
            signal=-status if status is not None and status < 0 else None,
            log_tail=self.workspace.log_tail(), exec_seconds=exec_seconds,
        )
        reusable = task.kind == "task" and task.nodes == 1 and self.config.reuse_instances
        # Declared outputs that matched nothing go with the report whatever the exit status; the control
        # plane decides what they mean (spotrun.domain.lifecycle: a failure of the program).
        self.report("completed", program=program, keep_instance=reusable, missing_outputs=missing)
        if reusable:
            self.next_assignment = self._take_next_task()
        if self.next_assignment is None:
            self.terminate_self()
        return 0

    def _image_fault(self, problem: str) -> int:
        """The image cannot run this task's checkpoint method, so no instance of it can: say so once,
        as the image's fault, and end this instance instead of taking (and failing) more tasks."""
        log.error("task %s of %s needs checkpoint method %s, which this image cannot run: %s", self.ref.index,
                  self.ref.job_id, self.spec.checkpoint.method, problem)
        self.report("environment_error", reason=problem, fault="image", image_id=self.image.image_id if self.image else None)
        self.terminate_self()
        return 5

    def _image_id(self) -> str | None:
        try:
            found = self.imds.get("ami-id")
        except Exception:  # noqa: BLE001 - the image's id only labels the report; its absence is no fault
            log.warning("no ami-id from the metadata service", exc_info=True)
            return None
        return found if found and IMAGE_ID.match(found) else None

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
        # The predecessor's attempt record ends when this attempt is admitted (TaskInterrupted); it has
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

    def _await_gang_claim(self) -> Task:
        """A rank other than 0 runs once its rank 0 claimed the task for this attempt."""
        deadline = time.monotonic() + self.config.claim_wait_seconds
        while time.monotonic() < deadline:
            task = self.store.get_task(self.ref.job_id, self.ref.index)
            if task is None or task.attempt != self.ref.attempt:
                raise ClaimRefused(f"attempt {self.ref.attempt} no longer owns its task")
            if task.state == "RUNNING":
                return task  # type: ignore[no-any-return]
            if task.state != "LAUNCHING":
                raise ClaimRefused(f"task is {task.state}")
            self.sleep(0.5)
        raise ClaimRefused(f"rank 0 did not claim the task within {self.config.claim_wait_seconds:g}s")

    def _meet_gang(self, task: Task) -> Gang:
        """The gang's addresses (this rank's from the metadata service) and rank 0's rendezvous port."""
        address = self.imds.get("local-ipv4") or "127.0.0.1"
        return rendezvous(self.s3, self.config.bucket, self.ref, task.nodes, address, self.config.claim_wait_seconds,
                          self.sleep)

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

    # ------------------------------------------------- what the supervisor uses

    def reclaim_notice(self) -> dict[str, Any] | None:
        try:
            return self.imds.spot_action()
        except Exception:  # noqa: BLE001 - a metadata hiccup is not a reclaim
            log.warning("metadata poll failed", exc_info=True)
            return None

    def heartbeat(self) -> None:
        """Liveness and progress, written by the agent itself on its task's item (`TaskStore.record_beat`,
        allowed by the task session's WriteOwnBeat): one conditional UpdateItem, no queue, no function."""
        progress = None
        with contextlib.suppress(OSError, ValueError):
            progress = min(1.0, max(0.0, float(self.workspace.progress_path.read_text().strip())))
        try:
            if not self.store.record_beat(self.ref.job_id, self.ref.index, self.ref.attempt, self.clock(), progress):
                # A newer attempt has beaten (or the task is gone): the next control read ends this attempt.
                log.warning("heartbeat refused: a newer attempt owns task %s", self.ref.index)
        except Exception:  # noqa: BLE001 - a lost heartbeat is survivable (the next one comes); the reaper confirms with EC2
            log.warning("heartbeat not written", exc_info=True)

    def report(self, outcome: str, reason: str = "", program: ProgramResult | None = None,
               checkpoint_seq: int | None = None, unsaved_seconds: float | None = None,
               keep_instance: bool = False, missing_outputs: list[str] | None = None,
               fault: str | None = None, image_id: str | None = None) -> None:
        report = CompletionReport(
            job_id=self.ref.job_id, index=self.ref.index, attempt=self.ref.attempt, instance_id=self.ref.instance_id,
            rank=self.ref.rank,  # a gang's result and its handover are its rank 0's report only
            sent_at=self.clock(), outcome=outcome, reason=clip(reason, MAX_REASON), program=program,
            checkpoint_seq=checkpoint_seq, unsaved_seconds=unsaved_seconds, keep_instance=keep_instance,
            missing_outputs=missing_outputs or [], fault=fault, image_id=image_id,
        )
        for attempt in range(5):
            try:
                self.sqs.send_message(QueueUrl=self.config.report_queue_url, MessageBody=report.model_dump_json())
                return
            except Exception:  # noqa: BLE001 - transient: retry the step, not the task
                log.warning("report not sent (try %d)", attempt + 1, exc_info=True)
                self.sleep(0.5 * 2**attempt)

    def upload_log(self) -> None:
        workspace.upload_log(self.s3, self.config.bucket, self.ref, self.workspace)

    def upload_outputs(self, task: Task) -> list[str]:
        """The task's declared outputs as far as its program got, and its log; the patterns that matched nothing.
        A gang's outputs are its rank 0's."""
        if self.ref.rank:
            self.upload_log()
            return []
        missing = workspace.upload_outputs(self.s3, self.config.bucket, self.ref, self.workspace,
                                           self._output_patterns(task))
        self.upload_log()
        return missing

    def log_tail(self) -> str:
        return self.workspace.log_tail()

    def terminate_self(self) -> None:
        if self.ec2 is None or not self.config.terminate_on_exit:
            return
        try:
            self.ec2.terminate_instances(InstanceIds=[self.ref.instance_id])
        except Exception:  # noqa: BLE001 - the reaper terminates orphans anyway
            log.warning("could not terminate own instance", exc_info=True)

    # ------------------------------------------------------- the program

    def _program_env(self, task: Task) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTRUN_", "AWS_SECRET", "AWS_SESSION"))}
        env.update(self.store.task_environment(task.job_id, task.index) or {})
        count = self.spec.task_count
        env.update({
            "SPOTRUN_JOB_ID": task.job_id, "SPOTRUN_TASK_INDEX": str(task.index), "SPOTRUN_TASK_COUNT": str(count),
            "SPOTRUN_ATTEMPT": str(self.ref.attempt), "SPOTRUN_WORK_DIR": str(self.workspace.workdir),
            "SPOTRUN_PROGRESS_FILE": str(self.workspace.progress_path),
        })
        if task.kind == "combine":
            env["SPOTRUN_TASK_OUTPUTS"] = str(self.workspace.task_outputs_dir)
        return env

    def _command(self, task: Task) -> str | list[str]:
        if task.kind == "combine" and self.spec.combine is not None:
            return self.spec.combine.command
        return self.spec.command

    def _output_patterns(self, task: Task) -> list[str]:
        if task.kind == "combine" and self.spec.combine is not None:
            return list(self.spec.combine.outputs)
        return list(self.spec.outputs)


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
    # The boot check's verdict (written before the agent started), or a check of our own at `run`.
    image = bootcheck.load(os.environ[EnvVar.IMAGE_CHECK]) if os.environ.get(EnvVar.IMAGE_CHECK) else None
    agent = Agent(config, routes, Imds(), ec2=client("ec2"), image=image)
    log.info("agent starting on %s (%s)", platform.node(), platform.machine())
    return agent.run()

