"""Helpers for the tests (and benchmarks, under bench/) that use a local deployment from outside."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from spotrun_local.deployment import LocalDeployment
from spotrun_local.runtime import REPO

TICKER = REPO / "local" / "spotrun_local" / "programs" / "ticker.py"


def ticker_job(seconds: float, interval: float) -> dict[str, Any]:
    """A job whose one task prints `tick <n> <epoch seconds>` every `interval` seconds for `seconds`."""
    return {"name": "ticker", "command": [sys.executable, str(TICKER), str(seconds), str(interval)],
            "checkpoint": {"method": "none"}, "resources": {"vcpus": 2, "memory_gib": 2}}


def submit(deployment: LocalDeployment, spec: dict[str, Any]) -> str:
    """The id of a job submitted through the deployment's API (accepted, or the test fails)."""
    status, accepted = deployment.client.call("POST", "/jobs", spec)
    assert status == 202, accepted
    return str(accepted["job_id"])


class LogFollower:
    """`spotrun logs JOB TASK --follow` as a real process: every line it prints, with the wall-clock time it
    arrived on its stdout (`arrivals`), read by a thread of its own as it comes. A context manager: leaving it
    ends the process if it still runs."""

    def __init__(self, deployment: LocalDeployment, job_id: str, task: int, poll_seconds: float) -> None:
        # a file, not a pipe: what it writes there cannot block it; closed on leaving the follower
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spotrun_cli", "logs", job_id, str(task), "--follow", "--interval", str(poll_seconds)],
            stdout=subprocess.PIPE, stderr=self._stderr, env=deployment.cli_env(), text=True)
        self.arrivals: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.arrivals.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float) -> int:
        """Its exit code once it ended (following ends with the task) and its last lines are read."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def errors(self) -> str:
        """What it wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
