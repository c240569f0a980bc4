"""The `signal` checkpointer: the program saves its own state when asked (like HTCondor's
self-checkpointing jobs).

What a program does to be checkpointed this way:

1. Read `$SPOTRUN_CHECKPOINT_DIR` (an absolute directory that exists when the program starts, and
   is the same path on every instance).
2. At start, if `$SPOTRUN_RESTORED` is `1`, the directory holds the files the program wrote at its
   last committed checkpoint: resume from them. Otherwise start from the beginning (the directory
   is empty).
3. On the checkpoint signal (SIGUSR1 unless the job says otherwise): write the state files into
   `$SPOTRUN_CHECKPOINT_DIR` (write, flush and fsync each; writing a temporary file and renaming it
   is the safe way), then create the empty marker file `$SPOTRUN_CHECKPOINT_DIR/.complete`. Creating
   the marker is the signal that the checkpoint is complete and consistent: the agent removes it
   before each request and takes the directory's files (hard links) as soon as it reappears.
4. Do not touch the directory between creating the marker and the next signal. Doing the work
   from the main loop (a handler that only sets a flag) is the usual way; the agent waits up to the
   checkpoint timeout for the marker.

The agent sends the signal only once the program handles it (or ignores it): until every process it
would reach has a handler installed (Linux's /proc/<pid>/status, SigCgt and SigIgn), a checkpoint is
"not ready" and asked for again later. A signal the program does not handle yet would kill it (the
default action of SIGUSR1), and a program that never handles it is simply never checkpointed.

Only the directory's files are kept (subdirectories too, the marker excepted). A checkpoint with no
files is refused. For an argv command the signal goes to the program itself; for a shell command it
goes to the whole process group (the shell ignores it), since `/bin/sh -c` does not replace itself
with the program. Option `signal_target` ("leader" or "group") overrides this.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import time
from pathlib import Path

from .base import CheckpointError, CheckpointNotReady, Command, Program, describe_status, shell_argv, signal_number

COMPLETE_MARKER = ".complete"
CHECKPOINT_SUBDIR = Path(".spotrun") / "checkpoint"
FICLONE = 0x40049409  # linux/fs.h: share the blocks copy-on-write, where the filesystem can


def checkpoint_dir_for(cwd: Path) -> Path:
    return cwd.resolve() / CHECKPOINT_SUBDIR


def state_files(directory: Path) -> list[Path]:
    """Regular files under `directory` (recursively), the completion marker left out, sorted."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            if path.parent == directory and name == COMPLETE_MARKER:
                continue
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


def snapshot_file(source: Path, target: Path) -> None:
    """Keep `source` as it is now at `target`, without copying bytes where possible.

    A hard link first: by the protocol (rule 4) the program leaves its files alone until the next
    signal, and the agent sends that only after this checkpoint is uploaded, so the linked inode
    cannot change under the upload; a program that rewrites its state by temporary file + rename
    leaves the link pointing at the old, committed bytes. Across filesystems: a reflink, else a copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS, errno.EBADF):
                raise
        shutil.copyfileobj(src, dst, 1 << 20)


class SignalCheckpointer:
    method = "signal"
    supports_checkpoint = True

    # The wait for the marker is on every checkpoint's critical path; a stat every 5 ms costs nothing.
    def __init__(self, signal_name: str | int | None = "SIGUSR1", signal_target: str | None = None,
                 poll_seconds: float = 0.005):
        self.signum = signal_number(signal_name)
        if signal_target not in (None, "leader", "group"):
            raise ValueError(f"signal_target must be 'leader' or 'group', not {signal_target!r}")
        self.signal_target = signal_target
        self.poll_seconds = poll_seconds
        self.program: Program | None = None
        self.checkpoint_dir: Path | None = None
        self._signal_group = False

    # ---------------------------------------------------------------- life

    def start(self, command: Command, env: dict[str, str], cwd: Path, log_path: Path,
              restore_from: Path | None = None) -> None:
        if self.program is not None:
            raise RuntimeError("the program was already started")
        directory = checkpoint_dir_for(cwd)
        # A leftover directory (an earlier attempt on this machine) must not leak into this run.
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        program_env = {k: v for k, v in env.items() if k != "SPOTRUN_RESTORED"}
        program_env["SPOTRUN_CHECKPOINT_DIR"] = str(directory)
        if restore_from is not None:
            files = state_files(restore_from)
            if not files:
                raise CheckpointError(f"nothing to restore: {restore_from} holds no checkpoint files")
            for path in files:
                snapshot_file(path, directory / path.relative_to(restore_from))
            program_env["SPOTRUN_RESTORED"] = "1"
        is_shell = isinstance(command, str)
        target = self.signal_target or ("group" if is_shell else "leader")
        self._signal_group = target == "group"
        trap = self.signum if is_shell and self._signal_group else None
        self.checkpoint_dir = directory
        self.program = Program(shell_argv(command, trap_signal=trap), program_env, cwd, log_path)

    def poll(self) -> int | None:
        return self.program.poll() if self.program else None

    def wait(self, timeout: float | None = None) -> int | None:
        return self.program.wait(timeout) if self.program else None

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        return self.program.stop(grace_seconds) if self.program else None

    @property
    def pid(self) -> int | None:
        return self.program.pid if self.program else None

    # ---------------------------------------------------------- checkpoint

    def checkpoint(self, into: Path, timeout: float) -> list[Path]:
        if self.program is None or self.checkpoint_dir is None:
            raise CheckpointError("the program was not started")
        status = self.program.poll()
        if status is not None:
            raise CheckpointError(f"cannot checkpoint: the program already {describe_status(status)}")
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise CheckpointError(f"checkpoint target {into} is not empty")
        signame = signal.Signals(self.signum).name
        unready = would_be_killed(self._targets(), self.signum)
        if unready:
            raise CheckpointNotReady(f"the program does not handle {signame} yet (process {unready[0]}): not sent")
        marker = self.checkpoint_dir / COMPLETE_MARKER
        marker.unlink(missing_ok=True)
        try:
            self.program.send(self.signum, group=self._signal_group)
        except ProcessLookupError:
            raise CheckpointError(f"cannot checkpoint: the program {describe_status(self.program.poll())}") from None
        deadline = time.monotonic() + timeout
        while not marker.exists():
            status = self.program.poll()
            if status is not None:
                raise CheckpointError(f"the program {describe_status(status)} during the checkpoint "
                                      f"(before it created {COMPLETE_MARKER})")
            if time.monotonic() >= deadline:
                raise CheckpointError(
                    f"checkpoint timed out after {timeout:g}s: the program did not create "
                    f"$SPOTRUN_CHECKPOINT_DIR/{COMPLETE_MARKER} after {signame} (does it handle {signame}?)"
                )
            time.sleep(self.poll_seconds)
        files = state_files(self.checkpoint_dir)
        if not files:
            raise CheckpointError(f"the program created {COMPLETE_MARKER} but wrote no files into $SPOTRUN_CHECKPOINT_DIR")
        copied = []
        for path in files:
            target = into / path.relative_to(self.checkpoint_dir)
            try:
                snapshot_file(path, target)
            except FileNotFoundError:
                raise CheckpointError(f"{path.name} vanished while it was copied: the program changed "
                                      "$SPOTRUN_CHECKPOINT_DIR after signalling completion") from None
            copied.append(target)
        return copied

    def ready(self) -> bool:
        """Whether the program may be signalled now (every process the signal reaches handles it)."""
        return self.program is not None and self.program.poll() is None and not would_be_killed(
            self._targets(), self.signum)

    def _targets(self) -> list[int]:
        """The processes the signal reaches: the leader, or every process of its group."""
        assert self.program is not None
        pid = self.program.pid
        if pid is None:
            return []
        if not self._signal_group:
            return [pid]
        return processes_in_group(self.program.pgid or pid)


def processes_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid` (from /proc; empty where there is none)."""
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid):
            found.append(int(entry.name))
    return sorted(found)


def would_be_killed(pids: list[int], signum: int) -> list[int]:
    """Those of `pids` that `signum` would terminate now: neither caught nor ignored (its default action).
    A zombie or a process that is gone is no one's concern; without /proc nothing can be told (empty)."""
    bit = 1 << (signum - 1)
    exposed = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            continue
        try:
            handled = int(fields["SigCgt"], 16) | int(fields["SigIgn"], 16)
        except (KeyError, ValueError):
            continue
        if not handled & bit:
            exposed.append(pid)
    return exposed
