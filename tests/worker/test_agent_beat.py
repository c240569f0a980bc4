"""The agent's heartbeat is its own write of its task's beat (`TaskStore.record_beat`), through the store
its task session gives it: no queue. A failed or refused write is logged, never raised: the next beat
comes at the next interval, and the reaper asks EC2 before it calls a silent worker lost."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from spotrun.domain.messages import AttemptRef
from spotrun_worker.agent import Agent, AgentConfig
from spotrun_worker.routes import InProcessRoutes
from spotrun_worker.workspace import Workspace

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class BeatStore:
    """The task session's store, as far as a beat goes."""

    def __init__(self, answer: Any = True):
        self.answer = answer
        self.beats: list[tuple[Any, ...]] = []

    def record_beat(self, job_id: str, index: int, attempt: int, at: datetime, progress: float | None = None) -> bool:
        self.beats.append((job_id, index, attempt, at, progress))
        if isinstance(self.answer, Exception):
            raise self.answer
        return bool(self.answer)


class NoQueue:
    def send_message(self, **_: Any) -> None:
        raise AssertionError("a heartbeat sends no message")


def agent_with(store: BeatStore, tmp_path: Any) -> Agent:
    config = AgentConfig(table="t", bucket="b", report_queue_url="r", work_root=tmp_path)
    agent = Agent(config, InProcessRoutes(None, "i-1", store=store, sqs=NoQueue()), None, clock=lambda: NOW)
    agent.ref = AttemptRef(job_id="j-1", index=4, attempt=2, instance_id="i-1")
    agent.workspace = Workspace(tmp_path, 2).create()
    return agent


@pytest.mark.parametrize(("written", "progress"), [
    (None, None), ("0.25\n", 0.25), ("1.7", 1.0), ("-3", 0.0), ("half", None), ("nan", 0.0), ("inf", 1.0),
], ids=["no file", "a fraction", "above 1", "below 0", "not a number", "NaN", "infinity"])
def test_a_beat_is_the_agents_own_write_with_the_programs_progress(tmp_path, written, progress):
    store = BeatStore()
    agent = agent_with(store, tmp_path)
    if written is not None:
        agent.workspace.progress_path.write_text(written)
    agent.heartbeat()
    assert store.beats == [("j-1", 4, 2, NOW, progress)]


@pytest.mark.parametrize("answer", [RuntimeError("throttled past the retries"), False],
                         ids=["the write failed", "a newer attempt has beaten"])
def test_a_beat_that_is_not_written_is_logged_and_the_agent_goes_on(tmp_path, caplog, answer):
    store = BeatStore(answer)
    agent = agent_with(store, tmp_path)
    with caplog.at_level(logging.WARNING, logger="spotrun.agent"):
        agent.heartbeat()
        agent.heartbeat()  # and the next one is tried again
    assert len(store.beats) == 2
    assert [r.getMessage() for r in caplog.records] == 2 * (
        ["heartbeat not written"] if isinstance(answer, Exception)
        else ["heartbeat refused: a newer attempt owns task 4"])
