"""Watching a running program: heartbeats, reclaim notices, the task's desired state, periodic
checkpoints, and ending the attempt early (final checkpoint, report, stop) when it must."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from datetime import datetime
from typing import Any, Protocol

from spotrun.domain.messages import AttemptRef, ProgramResult
from spotrun.domain.model import Desired, Task, TaskState
from spotrun_worker import transfer
from spotrun_worker.checkpointers import Checkpointer
from spotrun_worker.checkpointers.base import CheckpointError, CheckpointNotReady
from spotrun_worker.checkpoints import CheckpointCycle
from spotrun_worker.config import AgentConfig

log = logging.getLogger("spotrun.agent")

FINAL_CHECKPOINT_MARGIN_SECONDS = 10
# A periodic checkpoint that fails is retried at the next interval; this many in a row end the attempt.
MAX_FAILED_PERIODIC_CHECKPOINTS = 3
# A checkpoint the program could not be asked for yet (no handler installed) is asked for again this soon.
NOT_READY_RETRY_SECONDS = 5.0
TICK_SECONDS = 0.2


class Host(Protocol):
    """What the supervisor needs of the agent it works for."""

    config: AgentConfig
    ref: AttemptRef
    program_started: float  # time.monotonic() when the attempt's program started

    @property
    def store(self) -> Any: ...

    def clock(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...

    def reclaim_notice(self) -> dict[str, Any] | None: ...

    def heartbeat(self) -> None: ...

    def report(self, outcome: str, reason: str = "", program: ProgramResult | None = None, *,
               checkpoint_seq: int | None = None, unsaved_seconds: float | None = None) -> None: ...

    def upload_log(self) -> None: ...

    def upload_outputs(self, task: Task) -> list[str]: ...

    def log_tail(self) -> str: ...

    def terminate_self(self) -> None: ...


class Supervisor:
    def __init__(self, host: Host, checkpointer: Checkpointer, cycle: CheckpointCycle):
        self.host = host
        self.config = host.config
        self.checkpointer = checkpointer
        self.cycle = cycle

    def watch(self, task: Task) -> int | None:
        """Watch the program until it exits (None) or the attempt must end early (exit code of the agent)."""
        host, config = self.host, self.config
        now = time.monotonic()
        next_heartbeat = next_control = next_metadata = now
        next_checkpoint = now + self.cycle.interval()
        last_checkpoint_at = host.clock()
        failed_checkpoints = 0
        while True:
            if self.checkpointer.poll() is not None:
                return None
            now = time.monotonic()
            if now >= next_metadata:
                next_metadata = now + config.metadata_poll_seconds
                action = host.reclaim_notice()
                if action is not None:
                    return self.leave("interrupted", f"spot {action.get('action', 'reclaim')} notice",
                                      action.get("deadline"))
            if now >= next_heartbeat:
                next_heartbeat = now + config.heartbeat_seconds
                host.heartbeat()
            if now >= next_control:
                next_control = now + config.control_every
                # Eventually consistent (half the read units, twice a heartbeat for the whole task): a
                # suspend, cancel or checkpoint request reaches the program a moment later at worst.
                current = host.store.get_task(host.ref.job_id, host.ref.index, consistent=False)
                ended = self._follow_desired_state(current)
                if ended is not None:
                    return ended
                requested = current.checkpoint_requested_at if current is not None else None
                if requested is not None and requested > last_checkpoint_at:
                    next_checkpoint = now  # rebalance recommendation or user request: checkpoint early
            if getattr(self.cycle, "follows_rounds", False):  # a gang's rank > 0: rank 0 opens the rounds
                ending = self._serve_gang_round()
                if ending is not None:
                    return self.leave(ending, "the gang took its final checkpoint", None, checkpoint=False)
            if now >= next_checkpoint and self.checkpointer.supports_checkpoint:
                try:
                    self.cycle.take()
                    failed_checkpoints = 0
                except CheckpointNotReady as not_ready:
                    # The program cannot be asked yet (no handler installed): nothing was sent, nothing failed.
                    log.info("checkpoint postponed: %s", not_ready)
                    next_checkpoint = time.monotonic() + min(self.cycle.interval(), NOT_READY_RETRY_SECONDS)
                    host.sleep(TICK_SECONDS)
                    continue
                except (CheckpointError, transfer.TransferError):
                    if self.checkpointer.poll() is not None:
                        return None  # the program ended as it was asked for its state: its result counts
                    failed_checkpoints += 1
                    if failed_checkpoints >= MAX_FAILED_PERIODIC_CHECKPOINTS:
                        raise
                    # The committed checkpoint still stands; try again at the next interval.
                    log.warning("periodic checkpoint failed (%d in a row)", failed_checkpoints, exc_info=True)
                last_checkpoint_at = host.clock()
                next_checkpoint = time.monotonic() + self.cycle.interval()
            host.sleep(TICK_SECONDS)

    def _serve_gang_round(self) -> str | None:
        """Join a round of the gang's checkpoint that rank 0 opened; how the gang ends after a final one."""
        try:
            return self.cycle.serve_rounds()  # type: ignore[attr-defined, no-any-return]
        except (CheckpointError, transfer.TransferError):
            # Rank 0 does not commit a round without this rank's part: the last committed checkpoint stands.
            log.warning("this rank's part of a gang checkpoint failed", exc_info=True)
            return None

    def _follow_desired_state(self, current: Task | None) -> int | None:
        """End the attempt if the task (as just read) no longer runs here or was asked to stop; else None."""
        ref = self.host.ref
        if current is None:
            return self.leave("cancelled", "task removed", None, checkpoint=False)
        if current.attempt != ref.attempt:
            if current.draining_attempt == ref.attempt:
                # The control plane already launched the replacement: hand over with a final checkpoint.
                return self.leave("interrupted", "replaced after an interruption notice", None)
            return self.abandon("attempt superseded")
        if current.state != TaskState.RUNNING:
            return self.abandon(f"task is {current.state}")
        if current.desired == Desired.CANCEL:
            return self.leave("cancelled", "cancelled by the user", None, checkpoint=False, task=current)
        if current.desired == Desired.SUSPEND:
            return self.leave("suspended", "suspended by the user", None)
        return None

    def leave(self, outcome: str, reason: str, deadline: datetime | None, checkpoint: bool = True,
              task: Task | None = None) -> int:
        """End the attempt early: final checkpoint if there is time, report (with how long the program ran
        and its log's tail), stop the program. A cancelled task's outputs, as far as its program got, are
        uploaded (`task`): what a user asked for does not vanish with the instance."""
        log.info("ending the attempt (%s): %s", outcome, reason)
        seq = None
        if checkpoint and self.checkpointer.supports_checkpoint and self.checkpointer.poll() is None:
            budget = self.config.checkpoint_timeout_seconds
            if deadline is not None:
                budget = max(1.0, (deadline - self.host.clock()).total_seconds() - self._final_margin())
            try:
                seq = self.cycle.take(timeout=budget, final=True)
            except Exception:  # noqa: BLE001 - the last committed checkpoint still stands
                log.exception("final checkpoint failed")
        # Nothing the program did after it was frozen can be lost: it did nothing.
        unsaved = self.cycle.unsaved_seconds()
        ran = (self.cycle.frozen_at or time.monotonic()) - self.host.program_started
        self.stop_program()
        if task is not None:
            self.host.upload_outputs(task)  # and the log
        else:
            self.host.upload_log()
        self.host.report(outcome, reason=reason, checkpoint_seq=seq,
                         unsaved_seconds=unsaved if self.checkpointer.supports_checkpoint else None,
                         program=ProgramResult(exec_seconds=ran, log_tail=self.host.log_tail()))
        if outcome != "interrupted":
            self.host.terminate_self()
        return 0

    def _final_margin(self) -> float:
        """What a final checkpoint leaves before the reclaim: room to stop the program, upload the log, report.

        A gang's rank > 0 keeps none. It does not take its final checkpoint, it waits for rank 0's final
        round, and rank 0 hears of this instance's warning only from the control plane (interruption
        handler, then its control read), not from a notice of its own: that round may come late. Giving
        up the wait early stops this rank's program, and then no rank's part of the round can be taken
        (a gang's programs save a step they all reach), so the gang's final checkpoint is lost for sure;
        waiting on costs at most this rank's own wrap-up, if rank 0 never comes (its lines are shipped
        live, and its report is only a note on the timeline: the gang's handover is rank 0's report).
        docs/decisions.md, "A warned rank waits for rank 0's final round until its reclaim"."""
        return 0.0 if getattr(self.cycle, "follows_rounds", False) else FINAL_CHECKPOINT_MARGIN_SECONDS

    def stop_program(self) -> None:
        pid = self.checkpointer.pid
        if self.cycle.frozen_at is not None and pid is not None:
            with contextlib.suppress(ProcessLookupError):  # a stopped process only yields to SIGKILL
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        self.checkpointer.stop()

    def abandon(self, reason: str) -> int:
        log.warning("abandoning attempt %s: %s", self.host.ref.attempt, reason)
        self.checkpointer.stop()
        self.host.terminate_self()
        return 0
