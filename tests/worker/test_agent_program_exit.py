"""A program that ends while the agent asks it for a checkpoint has finished, not failed.

Found by the chaos soak (seed 6, 2 problems x 3 tasks): the agent looked at the program (running),
then asked it for a checkpoint (a rebalance recommendation) just as it exited with code 0; the
checkpointer raised "cannot checkpoint: the program already exited with code 0", the agent reported
an environment error, and the task ran again from its last checkpoint although its program had
succeeded. Reported (worker/spotrun_worker/agent.py is not the soak's to change)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spotrun.domain.messages import AttemptRef
from spotrun.domain.model import Desired, Task, TaskState
from spotrun.domain.spec import JobSpec
from spotrun_worker.agent import Agent, AgentConfig
from spotrun_worker.checkpointers.base import CheckpointError
from spotrun_worker.checkpoints import CheckpointCycle
from spotrun_worker.routes import InProcessRoutes
from spotrun_worker.supervisor import Supervisor
from spotrun_worker.workspace import Workspace

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class ExitsWhenAsked:
    """Running at the agent's first look; gone (exit 0) by the time the checkpoint is asked for."""

    method = "signal"
    supports_checkpoint = True
    pid = None

    def __init__(self) -> None:
        self.looks = 0

    def poll(self) -> int | None:
        self.looks += 1
        return None if self.looks == 1 else 0

    def checkpoint(self, into: Path, timeout: float) -> list[Path]:
        raise CheckpointError("cannot checkpoint: the program already exited with code 0")

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        return 0


class Store:
    def __init__(self, task: Task):
        self.task = task

    def get_task(self, job_id: str, index: int, consistent: bool = True) -> Task:
        return self.task


class Quiet:
    def send_message(self, **_: Any) -> None:
        return None

    def spot_action(self) -> None:
        return None


# Defect found by the soak (seed 6): the CheckpointError of a program that had just exited ended the
# attempt as an environment error, and the task ran again although its program had succeeded.
def test_a_program_that_exits_during_a_checkpoint_request_is_reported_as_finished(tmp_path):
    task = Task("j-1", 0, TaskState.RUNNING, 1, checkpoint_requested_at=NOW + timedelta(hours=1))
    config = AgentConfig(table="t", bucket="b", report_queue_url="r", work_root=tmp_path)
    routes = InProcessRoutes(None, "i-1", store=Store(task), sqs=Quiet())
    agent = Agent(config, routes, Quiet(), clock=lambda: NOW, sleep=lambda _: None)
    agent.ref = AttemptRef(job_id="j-1", index=0, attempt=1, instance_id="i-1")
    spec = JobSpec.model_validate({"name": "n", "command": ["true"], "checkpoint": {"method": "signal",
                                                                                   "interval": 30}})
    agent.workspace = Workspace(tmp_path, 1).create()
    checkpointer = ExitsWhenAsked()
    cycle = CheckpointCycle(routes, "b", agent.ref, spec, agent.workspace, checkpointer, agent.clock, 90, 30)
    # the program ended: upload its outputs and report its result
    assert Supervisor(agent, checkpointer, cycle).watch(task) is None


# Soak finding: a checkpoint signal that arrived before the program installed its handler killed it
# (SIGUSR1's default action), and the attempt ended as the program's failure.
def test_a_checkpoint_asked_for_before_the_program_handles_the_signal_costs_nothing(tmp_path):
    import sys
    import time

    from spotrun_worker.checkpointers import SignalCheckpointer

    task = Task("j-1", 0, TaskState.RUNNING, 1, checkpoint_requested_at=NOW + timedelta(hours=1))
    config = AgentConfig(table="t", bucket="b", report_queue_url="r", work_root=tmp_path)
    routes = InProcessRoutes(None, "i-1", store=Store(task), sqs=Quiet())
    agent = Agent(config, routes, Quiet(), clock=lambda: NOW, sleep=lambda seconds: time.sleep(min(seconds, 0.05)))
    agent.ref = AttemptRef(job_id="j-1", index=0, attempt=1, instance_id="i-1")
    spec = JobSpec.model_validate({"name": "n", "command": ["x"], "checkpoint": {"method": "signal", "interval": 30}})
    agent.workspace = Workspace(tmp_path, 1).create()
    checkpointer = SignalCheckpointer()
    cycle = CheckpointCycle(routes, "b", agent.ref, spec, agent.workspace, checkpointer, agent.clock, 90, 30)
    # a program busy starting up (imports, reading its inputs) for a second and a half, then done
    checkpointer.start([sys.executable, "-c", "import time; time.sleep(1.5)"], {"PATH": "/usr/bin:/bin"},
                       tmp_path, tmp_path / "log")
    started = time.monotonic()
    assert Supervisor(agent, checkpointer, cycle).watch(task) is None
    assert checkpointer.poll() == 0  # it ran to its end: not killed by SIGUSR1 (-10)
    assert time.monotonic() - started >= 1.0


class Sent:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_message(self, **message: Any) -> None:
        self.bodies.append(message["MessageBody"])


@pytest.mark.parametrize("wish", [Desired.CANCEL, Desired.SUSPEND])
def test_an_attempt_the_user_stops_reports_how_long_its_program_ran_and_a_cancelled_one_keeps_its_outputs(
        tmp_path, aws, wish):
    """Time of attempts ended by cancel or suspend was missing from the statistics (`execution 0 s`), and a
    cancelled job's outputs were lost with its instances."""
    import json
    import sys
    import time

    from spotrun_worker.checkpointers import SignalCheckpointer

    s3 = aws.client("s3")
    s3.create_bucket(Bucket="spotrun-data")
    task = Task("j-1", 0, TaskState.RUNNING, 1, desired=wish)
    config = AgentConfig(table="t", bucket="spotrun-data", report_queue_url="r",
                         work_root=tmp_path, checkpoint_timeout_seconds=5)
    sent = Sent()
    agent = Agent(config, InProcessRoutes(None, "i-1", store=Store(task), s3=s3, sqs=sent), Quiet(), clock=lambda: NOW,
                  sleep=lambda seconds: time.sleep(min(seconds, 0.05)))
    agent.ref = AttemptRef(job_id="j-1", index=0, attempt=1, instance_id="i-1")
    agent.spec = JobSpec.model_validate({"name": "n", "command": ["x"], "outputs": ["partial.txt"],
                                         "checkpoint": {"method": "signal", "interval": 30}})
    agent.workspace = Workspace(tmp_path / "w", 1).create()
    checkpointer = SignalCheckpointer()
    cycle = CheckpointCycle(agent.routes, "spotrun-data", agent.ref, agent.spec, agent.workspace, checkpointer,
                            agent.clock, 5, 30)
    cycle.take = lambda **_: None  # the suspend's checkpoint protocol is tested elsewhere
    program = ("import os, signal, time\n"
               "d = os.environ['SPOTRUN_CHECKPOINT_DIR']\n"
               "def save(*_):\n"
               "    open(os.path.join(d, 'state'), 'w').write('1'); open(os.path.join(d, '.complete'), 'w').close()\n"
               "signal.signal(signal.SIGUSR1, save)\n"
               "open('partial.txt', 'w').write('rows 1-500\\n')\n"
               "print('working', flush=True)\n"
               "time.sleep(30)\n")
    agent.program_started = time.monotonic()
    checkpointer.start([sys.executable, "-c", program], {"PATH": "/usr/bin:/bin"}, agent.workspace.workdir,
                       agent.workspace.log_path)
    while not (agent.workspace.workdir / "partial.txt").exists():
        time.sleep(0.05)
    assert Supervisor(agent, checkpointer, cycle).watch(task) == 0
    report = json.loads(sent.bodies[-1])
    assert report["outcome"] == ("cancelled" if wish == Desired.CANCEL else "suspended")
    assert report["program"]["exec_seconds"] > 0 and "working" in report["program"]["log_tail"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="spotrun-data").get("Contents", [])]
    assert ("jobs/j-1/outputs/0/partial.txt" in keys) == (wish == Desired.CANCEL)  # a suspended one resumes
