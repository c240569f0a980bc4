"""Helpers for the tests (and benchmarks, under bench/) that use a local deployment from outside."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from spotrun.provision import provision
from spotrun_local.deployment import LocalDeployment
from spotrun_local.endpoint import REGION, moto_server
from spotrun_local.persistence import StateJournal
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


@contextlib.contextmanager
def provisioned_moto(monkeypatch: pytest.MonkeyPatch, journal: StateJournal | None = None
                     ) -> Iterator[tuple[Any, dict[str, str]]]:
    """One life of the local AWS as the runtime builds it: moto's server (journaling to `journal`, loaded
    first, when one is given) reset, the resources provisioned, the journal's state put back and its
    capture on. A boto3 session reaching it (AWS_ENDPOINT_URL and local credentials set through
    `monkeypatch`) and the resources' environment; the server stops on leaving (the journal stays open)."""
    if journal is not None:
        journal.load()
    server = moto_server(journal=journal)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "local",
                            "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": REGION}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        session = boto3.session.Session(region_name=REGION)
        env = provision(session)
        if journal is not None:
            journal.restore()
            journal.activate()
        yield session, env
    finally:
        server.stop()
