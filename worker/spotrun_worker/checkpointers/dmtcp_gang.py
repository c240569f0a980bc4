"""The `dmtcp` checkpointer for one rank of a gang: every rank's processes under one coordinator, on rank 0.

DMTCP checkpoints communicating processes consistently, sockets included, only when they all join one
coordinator. So rank 0 starts the coordinator on its own address and the gang's coordinator port (from
the rendezvous, spotrun_worker.gang), and every rank, rank 0 included, launches its program with
`dmtcp_launch -j -h <rank 0's address> -p <port>`, never 127.0.0.1 (unless that is rank 0's address).
Each rank has a DMTCP_TMPDIR of its own, as separate machines do (sharing one hides the bugs the gang
patch fixes: docs/gangs.md).

A gang round is one `dmtcp_command -c` on rank 0 (DmtcpCheckpointer.checkpoint): the coordinator reports
the checkpoint complete once every process of every rank wrote its image. Only then does each other rank
collect the images it wrote (`collect`, told by the round protocol in spotrun_worker.gang) and upload them
as its part. A restore starts the new coordinator on the new rank 0 first; every other rank waits until
it answers, then runs `dmtcp_restart -j` against it. The gang is restored once the coordinator lists every
process RUNNING (`dmtcp_command -l`), not when `dmtcp_restart` returns (in a PID namespace an image whose
parent was pid 1 is restarted orphaned and `dmtcp_restart` exits at once); a restore that does not get
there in `restore_timeout` is ended with SIGKILL (processes stuck in a restart ignore SIGTERM and
`dmtcp_command -k`) and fails with what the coordinator said.

Needs DMTCP built with spotrun's gang patch (worker/image/dmtcp-gang.patch): stock 4.2.0 hangs draining
sockets between nodes and restores no connection across them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import CheckpointError, CheckpointerUnavailable, Command
from .dmtcp import (
    DMTCP_SUBDIR,
    IMAGE_GLOB,
    DmtcpCheckpointer,
    DmtcpClient,
    command_argv,
    move_checkpoint,
    wait_for_whole_images,
)
from .dmtcp_tools import gang_patch_problem

COORDINATOR_WAIT_SECONDS = 120.0  # a rank waits this long for rank 0's coordinator (it downloads its part first)
RESTORE_TIMEOUT_SECONDS = 120.0
QUIT_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class DmtcpGang:
    """What a rank's checkpointer needs of the gang: its rank, and where rank 0's coordinator listens."""

    rank: int
    nodes: int
    coordinator_host: str  # rank 0's address
    coordinator_port: int


class GangDmtcpCheckpointer(DmtcpCheckpointer):
    # The round protocol (spotrun_worker.gang) lets ranks > 0 collect only after rank 0's checkpoint completed.
    captures_on_rank0 = True
    streams_capture = False  # a rank > 0 cannot see its images being written by a checkpoint it did not start

    def __init__(self, gang: DmtcpGang, restore_timeout: float = RESTORE_TIMEOUT_SECONDS,
                 coordinator_wait: float = COORDINATOR_WAIT_SECONDS, **options: object):
        super().__init__(**options)  # type: ignore[arg-type]
        problem = gang_patch_problem(self.tools)
        if problem:
            raise CheckpointerUnavailable(problem)
        self.gang = gang
        self.restore_timeout = restore_timeout
        self.coordinator_wait = coordinator_wait
        self.coordinator_host = gang.coordinator_host
        self.coordinator_port = gang.coordinator_port

    def start(self, command: Command, env: dict[str, str], cwd: Path, log_path: Path,
              restore_from: Path | None = None) -> None:
        tmpdir = cwd.resolve() / DMTCP_SUBDIR / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        super().start(command, {**env, "DMTCP_TMPDIR": str(tmpdir)}, cwd, log_path, restore_from)
        if restore_from is not None:
            self._await_restored(time.monotonic() + self.restore_timeout)

    def _start_coordinator(self, env: dict[str, str], base: Path) -> int:
        if self.gang.rank == 0:
            port = super()._start_coordinator(env, base)
            if port != self.gang.coordinator_port:
                raise CheckpointError(f"the gang's DMTCP coordinator listens on {port}, not on the gang's port "
                                      f"{self.gang.coordinator_port}")
            return port
        return self._await_coordinator(env)

    def _await_coordinator(self, env: dict[str, str]) -> int:
        """A rank > 0 joins rank 0's coordinator: `-j` fails unless it is up, so wait until it answers."""
        deadline = time.monotonic() + self.coordinator_wait
        argv = command_argv(self.tools, self.gang.coordinator_port, "-s", host=self.gang.coordinator_host)
        said = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, env=env)  # noqa: S603
                if done.returncode == 0:
                    return self.gang.coordinator_port
                said = (done.stdout + done.stderr).strip()[-300:]
            time.sleep(0.2)
        raise CheckpointError(f"rank 0's DMTCP coordinator at {self.gang.coordinator_host}:{self.gang.coordinator_port} "
                              f"did not answer within {self.coordinator_wait:g}s: {said}")

    def _await_restored(self, deadline: float) -> None:
        """Every process of the gang RUNNING under the coordinator, or SIGKILL and a clear error."""
        clients: list[DmtcpClient] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                clients = self.clients()
            if len(clients) >= self.gang.nodes and all(c.state == "RUNNING" for c in clients):
                return
            status = self.program.poll() if self.program else None
            if status not in (None, 0):  # 0: dmtcp_restart left an orphaned restored process behind
                raise CheckpointError(f"dmtcp_restart ended with status {status} before the gang was restored")
            time.sleep(0.2)
        self._kill_program()
        listed = "; ".join(f"{c.program} {c.state}" for c in clients) or "no process"
        raise CheckpointError(f"the gang's restore did not finish within {self.restore_timeout:g}s (the coordinator "
                              f"lists: {listed}); killed. A rank that never restarted leaves the others waiting")

    def _kill_program(self) -> None:
        if self.program is not None and self.program.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(self.program.pid), signal.SIGKILL)

    # ---------------------------------------------------------- checkpoint

    def checkpoint(self, into: Path, timeout: float,
                   follow: Callable[[Path, str], None] | None = None) -> list[Path]:
        """Rank 0: the gang's one `dmtcp_command -c`. Other ranks: what that checkpoint wrote here."""
        if self.gang.rank == 0:
            return super().checkpoint(into, timeout)
        return self.collect(into, timeout)

    def collect(self, into: Path, timeout: float) -> list[Path]:
        """A rank > 0's part of a round rank 0's checkpoint completed: the images its processes wrote."""
        if self.program is None:
            raise CheckpointError("the program was not started")
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise CheckpointError(f"checkpoint target {into} is not empty")
        images = sorted(self.ckpt_dir.glob(IMAGE_GLOB))
        if not images:
            raise CheckpointError(f"rank {self.gang.rank} wrote no DMTCP image in {self.ckpt_dir} for the gang's "
                                  f"checkpoint (were its processes under rank 0's coordinator?)")
        wait_for_whole_images(images, time.monotonic() + timeout, 0.0)
        return move_checkpoint(images, into)

    def _quit_coordinator(self) -> None:
        """Rank 0 quits the gang's coordinator once the other ranks' processes left it (quitting kills them);
        the other ranks leave it alone: it is not theirs."""
        if self.gang.rank != 0:
            return
        deadline = time.monotonic() + QUIT_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                if not self.clients():
                    break
            except (OSError, subprocess.TimeoutExpired):
                break
            time.sleep(0.2)
        super()._quit_coordinator()
