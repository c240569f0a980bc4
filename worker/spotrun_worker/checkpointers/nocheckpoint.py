"""The `none` checkpointer: the program always starts from the beginning."""

from __future__ import annotations

from pathlib import Path

from .base import CheckpointUnsupported, Command, Program, shell_argv


class NoCheckpointer:
    method = "none"
    supports_checkpoint = False

    def __init__(self) -> None:
        self.program: Program | None = None

    def start(self, command: Command, env: dict[str, str], cwd: Path, log_path: Path,
              restore_from: Path | None = None) -> None:
        # restore_from is ignored on purpose: without checkpoints every attempt starts fresh.
        if self.program is not None:
            raise RuntimeError("the program was already started")
        self.program = Program(shell_argv(command), dict(env), cwd, log_path)

    def poll(self) -> int | None:
        return self.program.poll() if self.program else None

    def wait(self, timeout: float | None = None) -> int | None:
        return self.program.wait(timeout) if self.program else None

    def checkpoint(self, into: Path, timeout: float) -> list[Path]:
        raise CheckpointUnsupported("checkpoint method 'none' takes no checkpoints; the program restarts from scratch")

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        return self.program.stop(grace_seconds) if self.program else None

    @property
    def pid(self) -> int | None:
        return self.program.pid if self.program else None
