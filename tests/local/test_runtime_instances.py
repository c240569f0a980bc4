"""Local instances (spotrun_local.namespaces): each in a PID and mount namespace of its own, working in
the same /var/lib/spotrun/work as on AWS, backed by its own directory, and never outliving its
termination or the runtime itself. Real processes, real namespaces (we are root here)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spotrun_local.namespaces import WORK_PATH, IsolationUnavailable, LocalInstance, require_isolation
from spotrun_local.runtime import Instance, LocalRuntime, RuntimeOptions
from tests.support import wait_for

FAKE_AGENT = Path(__file__).parent / "programs" / "fake_agent.py"
REPO = Path(__file__).resolve().parents[2]


def namespace_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in(namespace: str) -> set[int]:
    """Every live process (not a zombie) of a PID namespace, by host PID."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") != namespace:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def boot(home: Path, *args: str) -> tuple[LocalInstance, str]:
    instance = LocalInstance.launch(home, [sys.executable, str(FAKE_AGENT), *args], dict(os.environ), home / "agent.log")
    wait_for(lambda: (home / "work" / "ready").exists(), timeout=20, what=f"the agent in {home} to be ready")
    init = instance.init_pid(wait_seconds=5)
    assert init is not None
    return instance, namespace_of(init)


def test_every_instance_works_in_the_same_path_on_its_own_files(tmp_path):
    first, _ = boot(tmp_path / "i-1", "first")
    second, _ = boot(tmp_path / "i-2", "second")
    try:
        assert (tmp_path / "i-1" / "work" / "mine.txt").read_text() == "first"
        assert (tmp_path / "i-2" / "work" / "mine.txt").read_text() == "second"
        assert not (WORK_PATH / "mine.txt").exists()  # the host's path stays an empty mount point
    finally:
        first.terminate()
        second.terminate()


def test_terminating_an_instance_kills_everything_it_started_and_nothing_else(tmp_path):
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    doomed, doomed_ns = boot(tmp_path / "i-1")
    neighbour, neighbour_ns = boot(tmp_path / "i-10")
    try:
        # init, agent, program and the detached daemon
        assert len(processes_in(doomed_ns)) >= 4
        before = processes_in(neighbour_ns)
        runtime._kill(Instance("i-1", "c6i.large", "us-east-1a", True, process=doomed))
        assert processes_in(doomed_ns) == set()
        assert doomed.poll() == -signal.SIGKILL  # the agent died with its instance
        assert processes_in(neighbour_ns) == before and neighbour.poll() is None
    finally:
        doomed.terminate()
        neighbour.terminate()


def test_killing_the_agent_leaves_the_instance_and_its_programs_up(tmp_path):
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    instance, namespace = boot(tmp_path / "i-1")
    runtime.instances["i-1"] = Instance("i-1", "c6i.large", "us-east-1a", True, process=instance)
    try:
        before = processes_in(namespace)
        runtime.kill_agent("i-1")
        assert instance.poll() == -signal.SIGKILL
        assert runtime.counters.agent_kills == 1
        left = processes_in(namespace)
        assert len(left) == len(before) - 1  # the agent only: init, program and daemon run on
        runtime._supervise_exits()
        assert runtime.instances["i-1"].exit_code == -signal.SIGKILL
    finally:
        instance.terminate()
    assert processes_in(namespace) == set()


def test_when_the_runtime_dies_by_sigkill_every_instance_dies_with_it(tmp_path):
    # A runtime stand-in that boots one instance the way the runtime does, then waits to be killed.
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from spotrun_local.namespaces import LocalInstance
        home = Path({str(tmp_path / "i-1")!r})
        instance = LocalInstance.launch(home, [sys.executable, {str(FAKE_AGENT)!r}], dict(os.environ),
                                        home / "agent.log")
        print(instance.init_pid(wait_seconds=10), flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("local", "worker", "lambdas"))}
    runtime = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    init = None
    try:
        init = int(runtime.stdout.readline())
        namespace = namespace_of(init)
        wait_for(lambda: (tmp_path / "i-1" / "work" / "ready").exists(), timeout=20, what="the agent")
        assert len(processes_in(namespace)) >= 4
        runtime.kill()
        runtime.wait()
        wait_for(lambda: not processes_in(namespace), timeout=10, what="the instance's processes to die")
    finally:
        runtime.kill()
        runtime.wait()
        if init is not None:  # should the chain have failed, do not leave the instance behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)


def test_where_namespaces_are_not_permitted_the_runtime_refuses_to_start(tmp_path):
    # Root without CAP_SYS_ADMIN (as in an unprivileged container): unshare(2) is refused.
    drop = ("setpriv", "--bounding-set", "-sys_admin", "--")
    with pytest.raises(IsolationUnavailable, match=r"Operation not permitted.*does not fall back"):
        require_isolation(tmp_path, wrapper=drop)
    require_isolation(tmp_path)  # and with it, the same check passes
    started = subprocess.run(
        [*drop, sys.executable, "-c", "from pathlib import Path; from spotrun_local.runtime import LocalRuntime, "
         f"RuntimeOptions; LocalRuntime(None, RuntimeOptions(root=Path({str(tmp_path / 'run')!r}))).start()"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("local", "worker", "lambdas"))},
        capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    assert "IsolationUnavailable: local instances need a private PID and mount namespace each" in started.stderr
    assert not (tmp_path / "run" / "instances").exists()


@pytest.mark.slow
def test_a_dmtcp_checkpoint_taken_on_one_instance_restores_on_another_into_its_own_files(tmp_path, dmtcp_bin):
    agent = Path(__file__).parent / "programs" / "dmtcp_agent.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("worker", "lambdas", "local", "."))}
    first_home, second_home = tmp_path / "i-1", tmp_path / "i-2"
    first = LocalInstance.launch(first_home, [sys.executable, str(agent), str(dmtcp_bin), "launch"], env,
                                 first_home / "agent.log")
    second = None
    try:
        wait_for(lambda: (first_home / "work" / "checkpointed").exists(), timeout=60, what="the first checkpoint",)
        at = int((first_home / "work" / "checkpointed").read_text())
        progress = first_home / "work" / "task" / "progress.txt"
        wait_for(lambda: int(progress.read_text() or 0) >= at + 3, timeout=30, what="progress after the checkpoint")
        first.terminate()  # reclaimed: the program dies with its instance
        lost = (first_home / "work" / "task" / "out.txt").read_bytes()

        second = LocalInstance.launch(second_home, [sys.executable, str(agent), str(dmtcp_bin), "restore",
                                                    str(first_home / "work" / "outgoing")], env, second_home / "agent.log")
        wait_for(lambda: (second_home / "work" / "restored.exit").exists(), timeout=120, what="the restore to finish")
        assert (second_home / "work" / "restored.exit").read_text() == "0", (second_home / "agent.log").read_text()
        reference = tmp_path / "reference"
        reference.mkdir()
        subprocess.run([sys.executable, str(REPO / "tests/worker/programs/appender.py"), "40", "0"], cwd=reference,
                       check=True)
        # the restored program wrote into the second instance's own directory, and completely...
        assert (second_home / "work" / "task" / "out.txt").read_bytes() == (reference / "out.txt").read_bytes()
        # ...and never into the first one's, which stays as the reclaim left it
        assert (first_home / "work" / "task" / "out.txt").read_bytes() == lost
        assert len(lost.splitlines()) < 40
    finally:
        first.terminate()
        if second is not None:
            second.terminate()


def test_an_instance_that_cannot_set_itself_up_says_why_and_runs_no_agent(tmp_path):
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    home = tmp_path / "i-1"
    home.mkdir()
    (home / "work").write_text("a file where the instance's work directory should be")
    instance = LocalInstance.launch(home, [sys.executable, str(FAKE_AGENT)], dict(os.environ), home / "agent.log")
    runtime.instances["i-1"] = Instance("i-1", "c6i.large", "us-east-1a", True, process=instance)
    try:
        wait_for(lambda: instance.poll() is not None, timeout=20, what="the instance to give up")
        assert instance.poll() == 70
        assert "cannot set up the instance's namespaces" in (instance.setup_error() or "")
        runtime._supervise_exits()
        [event] = [e for e in runtime.counters.events if e["kind"] == "agent_exit"]
        assert event["code"] == 70 and "File exists" in event["setup_error"]
        assert "spotrun instance: cannot set up" in (home / "agent.log").read_text()  # in its log too
    finally:
        instance.terminate()


def test_the_common_work_path_is_the_agents_default_work_root():
    from spotrun_worker.config import AgentConfig

    assert AgentConfig.__dataclass_fields__["work_root"].default == WORK_PATH


def test_a_reclaim_looks_like_one_on_aws(tmp_path, aws, env):
    """EC2 terminates a reclaimed spot instance with the state reason Server.SpotInstanceTermination, which
    the control plane reads to tell a reclaim from any other lost instance; moto alone says
    Client.UserInitiatedShutdown. The market replay's reclaims and the soak's reclaims without a warning
    both go through `LocalRuntime.reclaim`."""
    import json

    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    runtime.ec2, runtime.events = aws.client("ec2"), aws.client("events")
    instance_id = runtime.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]["InstanceId"]
    runtime.instances[instance_id] = Instance(instance_id, "c6i.large", "us-east-1a", True)
    runtime.reclaim(instance_id)
    described = runtime.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "terminated"
    assert described["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    queue = json.loads(env["SPOTRUN_QUEUE_URLS"])["interruptions"]
    messages = aws.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    delivered = [json.loads(m["Body"]) for m in messages]
    assert [(e["detail-type"], e["detail"]) for e in delivered] == [
        ("EC2 Instance State-change Notification", {"instance-id": instance_id, "state": "shutting-down"})]
    assert (runtime.counters.reclaims, runtime.counters.reclaims_without_warning) == (1, 1)
    assert runtime.instances[instance_id].killed
