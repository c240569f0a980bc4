"""The contract every checkpointer keeps, its errors, and the program's process group they share.

A checkpointer owns one run of the user's program: it starts it (fresh, or resumed from a previous
checkpoint's files), reports its exit status, takes checkpoints on demand and stops it. The agent
never touches the program's processes itself.

Exit statuses follow `subprocess`: a non-negative exit code, or minus the signal that killed the
program.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

Command = str | Sequence[str]
KILL_WAIT_SECONDS = 5.0


class CheckpointError(RuntimeError):
    """A checkpoint could not be taken (failed, timed out, or the program exited meanwhile).

    The program may still be running: the previous committed checkpoint still stands.
    """


class CheckpointUnsupported(CheckpointError):
    """This checkpointer cannot take checkpoints (method "none")."""


class CheckpointNotReady(CheckpointError):
    """The program cannot be asked for a checkpoint yet (it has not installed its handler): nothing was
    sent, the program runs on, and the agent asks again later. Not a failed checkpoint."""


class CheckpointerUnavailable(RuntimeError):
    """The checkpointer's tools are not installed on this machine."""


@runtime_checkable
class Checkpointer(Protocol):
    method: str  # "dmtcp" | "signal" | "none"
    supports_checkpoint: bool

    def start(self, command: Command, env: dict[str, str], cwd: Path, log_path: Path,
              restore_from: Path | None = None) -> None:
        """Start the program, or resume it from the checkpoint files in `restore_from`.

        A string runs through `/bin/sh -c`, a list runs as argv without a shell; stdout and stderr
        are appended to `log_path`; the program gets its own process group.
        """
        ...

    def poll(self) -> int | None:
        """None while the program runs, else its exit status."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once the program ended, or None if it still runs after `timeout` seconds."""
        ...

    def checkpoint(self, into: Path, timeout: float) -> list[Path]:
        """Take a checkpoint now, block until it is complete and consistent, leave its files in the
        empty directory `into` and return them. The program keeps running.

        Raises CheckpointError on failure or timeout, CheckpointUnsupported for method "none".
        """
        ...

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """SIGTERM the program's process group, SIGKILL what is left after the grace; the exit status."""
        ...

    @property
    def pid(self) -> int | None:
        ...


def signal_number(name: str | int | signal.Signals | None, default: signal.Signals = signal.SIGUSR1) -> signal.Signals:
    """`SIGUSR1`, `USR1`, `usr1`, 10 or a Signals member -> the Signals member."""
    if name is None or name == "":
        return default
    if isinstance(name, signal.Signals):
        return name
    if isinstance(name, int):
        return signal.Signals(name)
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


def describe_status(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with code {status}"


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still alive (zombies waiting for their parent do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds while only zombies remain; look at their states.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields after "(comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Program:
    """One program run in its own session and process group, its output appended to a log file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path, log_path: Path):
        if not Path(cwd).is_dir():
            raise NotADirectoryError(f"working directory {cwd} does not exist")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self._unstarted_status: int | None = None
        with log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(  # noqa: S603 - runs the user's own program, by design
                    list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True,
                )
            except OSError as error:
                # Like a shell: a command that cannot be executed is the program's failure (127 when
                # it is not found, 126 otherwise), not the machine's.
                self._unstarted_status = 127 if error.errno == errno.ENOENT else 126
                log.write(f"spotrun: cannot execute {argv[0]}: {error.strerror}\n".encode())
        # start_new_session makes the child a session and group leader: its pid is the group id.
        self.pgid = self.process.pid if self.process else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process else self._unstarted_status

    def wait(self, timeout: float | None = None) -> int | None:
        if self.process is None:
            return self._unstarted_status
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int, group: bool) -> None:
        """Send a signal to the leader or the whole group; ProcessLookupError if nobody is there."""
        if self.process is None or self.pgid is None:
            raise ProcessLookupError("the program never started")
        if group:
            os.killpg(self.pgid, signum)
        elif self.process.poll() is None:
            self.process.send_signal(signum)
        else:
            raise ProcessLookupError(self.pid)

    def stop(self, grace_seconds: float) -> int | None:
        """SIGTERM the group, wait for the leader and then for the rest, SIGKILL whatever is left;
        returns once the group is gone (or after a few seconds more if the kernel is slow to reap it)."""
        if self.process is None or self.pgid is None:
            return self._unstarted_status
        deadline = time.monotonic() + max(0.0, grace_seconds)
        if self.process.poll() is None or _group_alive(self.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            self.wait(max(0.0, deadline - time.monotonic()))
            while _group_alive(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        status = self.wait(KILL_WAIT_SECONDS)
        # kill() returns before the processes are gone; on a busy machine that takes a moment.
        gone_by = time.monotonic() + KILL_WAIT_SECONDS
        while _group_alive(self.pgid) and time.monotonic() < gone_by:
            time.sleep(0.02)
        return status


def shell_argv(command: Command, trap_signal: signal.Signals | None = None) -> list[str]:
    """argv for a command: a string through `/bin/sh -c` (optionally surviving `trap_signal`), a list as is."""
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("empty command")
        if trap_signal is not None:
            # The shell stays alive when the checkpoint signal is sent to the whole group; a caught
            # signal is reset to its default in the programs the shell runs, so they get it as usual.
            command = f"trap : {trap_signal.name.removeprefix('SIG')}\n{command}"
        return ["/bin/sh", "-c", command]
    argv = [str(part) for part in command]
    if not argv:
        raise ValueError("empty command")
    return argv
