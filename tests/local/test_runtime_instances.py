"""An instance the local runtime terminates takes everything on it along, including the programs its
agent started in sessions of their own (found by the chaos soak: programs of reclaimed instances ran
on to their end)."""

from __future__ import annotations

import subprocess
import sys
import time

from spotrun_local.runtime import Instance, LocalRuntime, RuntimeOptions


def test_terminating_an_instance_kills_the_programs_its_agent_started(tmp_path):
    runtime = LocalRuntime(market=None, options=RuntimeOptions(root=tmp_path))  # type: ignore[arg-type]
    home = tmp_path / "instances" / "i-1"
    work = home / "work" / "job" / "0"
    work.mkdir(parents=True)
    other = tmp_path / "instances" / "i-10" / "work"  # a neighbour whose id starts the same
    other.mkdir(parents=True)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    agent = subprocess.Popen(sleeper, cwd=home, start_new_session=True)
    program = subprocess.Popen(sleeper, cwd=work, start_new_session=True)  # as the agent starts programs
    neighbour = subprocess.Popen(sleeper, cwd=other, start_new_session=True)
    try:
        runtime._kill(Instance("i-1", "c6i.large", "us-east-1a", True, process=agent))
        assert agent.poll() is not None
        program.wait(timeout=5)
        time.sleep(0.2)
        assert neighbour.poll() is None
        assert any(e["kind"] == "program_killed_with_instance" for e in runtime.counters.events)
    finally:
        for process in (agent, program, neighbour):
            process.kill()
            process.wait()
