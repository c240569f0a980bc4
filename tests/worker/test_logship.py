"""The agent's log shipper: a real program's output, and the agent's own lines, in the attempt's
CloudWatch Logs stream (moto's) within about a second, in order, whole."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Any

import pytest

from spotrun_worker import logship
from tests.support import wait_for

GROUP, STREAM = "/spotrun/tasks", "j-1/0/1"


@pytest.fixture
def logs(aws: Any) -> Any:
    client = aws.client("logs", region_name="us-east-1")
    client.create_log_group(logGroupName=GROUP)
    client.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    return client


def messages(logs: Any) -> list[str]:
    events = logs.get_log_events(logGroupName=GROUP, logStreamName=STREAM, startFromHead=True)["events"]
    return [e["message"] for e in events]


def test_a_running_programs_output_is_in_its_stream_within_a_second_with_the_agents_lines_in_order(logs, tmp_path):
    path = tmp_path / "attempt-1.log"
    shipper = logship.LogShipper(logs, GROUP, STREAM, path, interval=0.2).start()
    program = ("import sys, time\n"
               "for n in range(3):\n"
               "    print(f'step {n}', flush=True)\n"
               "    time.sleep(0.3)\n"
               "time.sleep(30)\n")
    with path.open("ab") as output:
        process = subprocess.Popen([sys.executable, "-c", program], stdout=output, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        wait_for(lambda: "step 0" in messages(logs), 3.0, "the first line to ship")
        assert time.monotonic() - started < 1.5
        wait_for(lambda: "step 2" in messages(logs), 5.0, "the third line")
        shipper.note("checkpoint 1 committed")
        wait_for(lambda: any("checkpoint 1" in m for m in messages(logs)), 3.0, "the agent's line")
        assert process.poll() is None  # all of it while the program still runs
        assert messages(logs) == ["step 0", "step 1", "step 2", "[spotrun] checkpoint 1 committed"]
    finally:
        process.kill()
        process.wait()
        shipper.close()


def test_an_unfinished_line_ships_after_a_while_and_the_rest_at_close(logs, tmp_path):
    path = tmp_path / "attempt-1.log"
    clock = [time.time()]
    shipper = logship.LogShipper(logs, GROUP, STREAM, path, clock=lambda: clock[0])
    path.write_bytes(b"progress 10%")
    shipper.flush()
    assert messages(logs) == []  # the program may still finish the line
    clock[0] += logship.PARTIAL_LINE_SECONDS
    shipper.flush()
    assert messages(logs) == ["progress 10%"]
    with path.open("ab") as output:
        output.write("\ndone: caf\xe9 ".encode() + "\u00e9".encode()[:1])  # ends inside a character
    shipper.flush()
    shipper.close()
    assert messages(logs) == ["progress 10%", "done: caf\xe9 \ufffd"]


def test_a_line_longer_than_an_event_is_split_and_a_failed_put_is_retried(logs, tmp_path):
    path = tmp_path / "attempt-1.log"
    long_line = "x" * (logship.MAX_EVENT_BYTES + 10)
    path.write_text(long_line + "\nafter\n")

    class FailsOnce:
        def __init__(self) -> None:
            self.calls = 0

        def put_log_events(self, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("throttled")
            return logs.put_log_events(**kwargs)

    client = FailsOnce()
    shipper = logship.LogShipper(client, GROUP, STREAM, path)
    shipper.flush()
    assert messages(logs) == [] and shipper.failed_puts == 1
    shipper.flush()  # the next tick puts what the failed one could not
    shipped = messages(logs)
    assert [len(m) for m in shipped] == [logship.MAX_EVENT_BYTES, 10, 5] and "".join(shipped[:2]) == long_line


def test_the_agents_log_records_become_lines_of_the_attempts_log(logs, tmp_path):
    shipper = logship.LogShipper(logs, GROUP, STREAM, tmp_path / "attempt-1.log")
    handler = logship.AgentLines(shipper)
    agent = logging.getLogger("spotrun.agent")
    agent.addHandler(handler)
    try:
        agent.setLevel(logging.INFO)
        agent.info("restoring checkpoint %s", 3)
        logging.getLogger("spotrun.logship").warning("not shipped: this one stays out")
    finally:
        agent.removeHandler(handler)
    shipper.close()
    assert messages(logs) == ["[spotrun] INFO restoring checkpoint 3"]


def test_without_a_log_group_nothing_is_shipped(tmp_path):
    shipper = logship.for_attempt(None, GROUP, "j-1", 0, 1, tmp_path / "a.log")
    assert isinstance(shipper, logship.NoShipper)
    assert isinstance(logship.for_attempt(object(), "", "j-1", 0, 1, tmp_path / "a.log"), logship.NoShipper)
