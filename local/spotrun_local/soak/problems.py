"""The soak's problems: jobs of the soak program (`spotrun_local/programs/soak.py`) whose every output the
soak can compute itself, and their submission through the API's use case while chaos runs."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "soak.py"
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


def problem_name(seed: int, k: int) -> str:
    return f"soak-{seed}-p{k}"


def problem_spec(name: str, tasks: int, steps: int, step_seconds: float, method: str) -> dict[str, Any]:
    return {
        "name": name,
        "command": [sys.executable, str(PROGRAM), "work", name, str(steps), str(step_seconds)],
        "outputs": ["result.json"],
        "tasks": tasks,
        "combine": {"command": [sys.executable, str(PROGRAM), "combine", name], "outputs": ["combined.json"]},
        "checkpoint": {"method": method, "interval": 30} if method == "signal" else {"method": "none"},
        "retries": {"program": 0, "environment": 100},
        "max_concurrency": tasks,
        "resources": {"vcpus": 2, "memory_gib": 2},
    }


@dataclass
class Problem:
    name: str
    method: str
    tasks: int
    spec: dict[str, Any]
    job_id: str | None = None
    state: str | None = None
    finished_after: float | None = None

    @property
    def combine_index(self) -> int:
        return self.tasks

    def kind(self, index: int) -> str:
        return "combine" if index == self.combine_index else "task"


def problems(seed: int, count: int, tasks: int, steps: int, step_seconds: float) -> list[Problem]:
    """`count` problems of `tasks` tasks each plus a combine step; checkpointers `signal` and `none` alternate."""
    made = []
    for k in range(count):
        method = "signal" if k % 2 == 0 else "none"
        name = problem_name(seed, k)
        made.append(Problem(name, method, tasks, problem_spec(name, tasks, steps, step_seconds, method)))
    return made


def submit(runtime: Any, problem: Problem, seed: int, deadline: float) -> None:
    """Through the API's use case on the current control plane (faults and crashes included): retried
    with an idempotency key until it answers, as a client of the API would."""
    from spotrun.jobs import submit_job
    from spotrun_local.control_plane import ControlPlaneStopped

    while time.monotonic() < deadline:
        try:
            job, _ = submit_job(runtime.cp, problem.spec, owner="soak", idempotency_key=f"{problem.name}-{seed}")
            problem.job_id = job.job_id
            return
        except (Exception, ControlPlaneStopped) as error:  # noqa: BLE001 - the client retries
            logging.getLogger("spotrun.soak").info("submission of %s failed (%s); retrying", problem.name, error)
            time.sleep(0.5)
