"""A big sweep's tasks stored lazily (`spotrun.sweeps`), through the real handlers against moto: listed,
counted, cancelled (one by one and whole), suspended and resumed, and finished like a job stored whole."""

from __future__ import annotations

from typing import Any

import pytest

from spotrun import sweeps
from spotrun.adapters.dynamo import TASK_SHARDS
from spotrun.assignments import next_task
from spotrun.attempts import claim
from spotrun.domain.messages import CompletionReport, ProgramResult
from spotrun.domain.model import TaskState
from tests.integration.test_task_flow import JOB, Loop, completion, ref


@pytest.fixture(autouse=True)
def small_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweeps whose lazy part starts after 3 tasks, stored 2 per transaction: every path at a small size."""
    monkeypatch.setattr(sweeps, "EAGER_TASKS", 3)
    monkeypatch.setattr(sweeps, "MATERIALIZE_CHUNK", 2)


def sweep_of(tasks: int, max_concurrency: int) -> dict[str, Any]:
    return {**JOB, "name": "sweep", "tasks": tasks, "max_concurrency": max_concurrency}


def stored_indexes(cp: Any, job_id: str) -> set[int]:
    """The task items the table holds (the by_job index, every shard): what was materialized."""
    raw = cp.store.client
    found = set()
    for shard in range(TASK_SHARDS):
        answer = raw.query(TableName=cp.settings.table, IndexName="by_job", KeyConditionExpression="job_pk = :p",
                           ExpressionAttributeValues={":p": {"S": f"{job_id}#{shard}"}})
        found |= {int(item["job_sk"]["S"]) for item in answer["Items"]}
    return found


def every_task(loop: Loop, job_id: str, state: str | None = None, limit: int = 4) -> list[dict[str, Any]]:
    """GET /jobs/{id}/tasks page by page."""
    tasks: list[dict[str, Any]] = []
    token = None
    for _ in range(100):
        query = {"limit": str(limit), **({"state": state} if state else {}), **({"next_token": token} if token else {})}
        status, page = loop.api("GET", f"/jobs/{job_id}/tasks", **query)
        assert status == 200, page
        tasks += page["tasks"]
        token = page["next_token"]
        if token is None:
            return tasks
    raise AssertionError("the listing did not end")


def run_launching(loop: Loop, cp: Any, job_id: str, clock: Any) -> int:
    """Claim every launching task of the job and report it completed (what their agents would do)."""
    done = 0
    for task in cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, 100):
        claim(cp, ref(task))
        clock.advance(5)
        loop.send("reports", completion(cp.store.get_task(job_id, task.index), clock()))
        done += 1
    loop.drain()
    return done


def test_a_big_sweep_is_stored_lazily_and_listed_and_counted_whole(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    status, accepted = loop.api("POST", "/jobs", sweep_of(10, max_concurrency=2))
    assert status == 202 and accepted["tasks"] == 10
    job_id = accepted["job_id"]
    assert stored_indexes(cp, job_id) == {0, 1, 2}  # the rest waits for its admission
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"] == {"QUEUED": 10} and job["state"] == "QUEUED"
    listed = every_task(loop, job_id)
    assert [t["index"] for t in listed] == list(range(10)) and {t["state"] for t in listed} == {"QUEUED"}
    assert sorted(t["index"] for t in every_task(loop, job_id, "QUEUED", limit=3)) == list(range(10))
    assert every_task(loop, job_id, "RUNNING") == []
    status, seventh = loop.api("GET", f"/jobs/{job_id}/tasks/7")
    assert status == 200 and seventh["state"] == "QUEUED" and seventh["attempt"] == 0
    assert loop.api("GET", f"/jobs/{job_id}/tasks/10")[0] == 404

    loop.drain()  # the scheduler admits 2: stored ones first
    launching = cp.store.tasks_in_state(job_id, TaskState.LAUNCHING, 10)
    assert sorted(t.index for t in launching) == [0, 1]
    listed = every_task(loop, job_id)
    assert sorted(t["index"] for t in listed) == list(range(10))
    assert sorted(t["index"] for t in listed if t["state"] == "LAUNCHING") == [0, 1]


def test_a_lazily_stored_sweep_runs_to_the_end_each_task_once(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(8, max_concurrency=3))
    job_id = accepted["job_id"]
    loop.drain()
    finished = 0
    for _ in range(10):
        finished += run_launching(loop, cp, job_id, clock)
        if finished == 8:
            break
    assert finished == 8
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["state"] == "SUCCEEDED" and job["counts"] == {"SUCCEEDED": 8}
    assert stored_indexes(cp, job_id) == set(range(8))
    listed = every_task(loop, job_id)
    assert sorted(t["index"] for t in listed) == list(range(8)) and {t["attempt"] for t in listed} == {1}


def test_instance_reuse_takes_the_next_pending_task(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(6, max_concurrency=3))
    job_id = accepted["job_id"]
    loop.drain()
    first = cp.store.get_task(job_id, 0)
    claim(cp, ref(first))
    clock.advance(5)
    # The stored queued tasks are gone (0-2 launched); the reused instance takes task 3, stored as it is taken.
    done = cp.store.get_task(job_id, 0)
    loop.send("reports", CompletionReport(  # its agent keeps the instance: no wake-up for the scheduler
        job_id=job_id, index=0, attempt=done.attempt, instance_id=done.instance_id, sent_at=clock(),
        outcome="completed", program=ProgramResult(exit_code=0, exec_seconds=4.0, log_tail=""), keep_instance=True,
    ).model_dump_json())
    loop.drain()
    assert 3 not in stored_indexes(cp, job_id)
    answer = next_task(cp, first.instance_id, first.attempt)
    assert answer.worker is not None and answer.worker.index == 3
    assert cp.store.get_task(job_id, 3).state == TaskState.LAUNCHING


def test_a_pending_task_cancelled_by_itself_is_skipped_and_the_job_ends(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(7, max_concurrency=2))
    job_id = accepted["job_id"]
    status, cancelled = loop.api("POST", f"/jobs/{job_id}/tasks/5/cancel")
    assert status == 202 and cancelled["state"] == "CANCELLED"
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"] == {"QUEUED": 6, "CANCELLED": 1}
    assert loop.api("POST", f"/jobs/{job_id}/tasks/5/cancel")[0] == 409  # cancelled already
    assert [t["index"] for t in every_task(loop, job_id, "CANCELLED")] == [5]
    assert sorted(t["index"] for t in every_task(loop, job_id, "QUEUED")) == [0, 1, 2, 3, 4, 6]
    loop.drain()
    finished = 0
    for _ in range(10):
        finished += run_launching(loop, cp, job_id, clock)
        if finished == 6:
            break
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"] == {"SUCCEEDED": 6, "CANCELLED": 1}
    assert cp.store.get_task(job_id, 5).attempt == 0  # never admitted
    assert sorted(t["index"] for t in every_task(loop, job_id)) == list(range(7))


def test_suspend_and_resume_move_the_pending_tasks_at_once(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(9, max_concurrency=1))
    job_id = accepted["job_id"]
    loop.drain()
    assert loop.api("POST", f"/jobs/{job_id}/suspend")[0] == 202
    loop.drain()
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"].get("SUSPENDED") == 9 and job["state"] == "SUSPENDED"  # the launching one too
    assert {t["state"] for t in every_task(loop, job_id)} == {"SUSPENDED"}
    assert loop.api("POST", f"/jobs/{job_id}/resume")[0] == 202
    loop.drain()
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"] == {"QUEUED": 8, "LAUNCHING": 1}
    events = loop.api("GET", f"/jobs/{job_id}/events")[1]["events"]
    kinds = [e["kind"] for e in events]
    assert "PendingTasksSuspended" in kinds and "PendingTasksResumed" in kinds


def test_a_million_task_sweep_is_accepted_counted_listed_and_cancelled(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    status, accepted = loop.api("POST", "/jobs", {**sweep_of(1_000_000, max_concurrency=2), "combine": {
        "command": ["python", "combine.py"]}})
    assert status == 202 and accepted["tasks"] == 1_000_000
    job_id = accepted["job_id"]
    assert stored_indexes(cp, job_id) == {0, 1, 2, 1_000_000}  # three tasks and the combine step
    loop.drain()
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["counts"] == {"QUEUED": 999_998, "LAUNCHING": 2, "WAITING": 1}
    status, last = loop.api("GET", f"/jobs/{job_id}/tasks/999999")
    assert status == 200 and last["state"] == "QUEUED"
    _, page = loop.api("GET", f"/jobs/{job_id}/tasks", limit="5")
    assert len(page["tasks"]) == 5 and page["next_token"]

    assert loop.api("POST", f"/jobs/{job_id}/cancel")[0] == 202
    loop.drain()
    _, job = loop.api("GET", f"/jobs/{job_id}")
    assert job["state"] == "CANCELLED" and job["counts"] == {"CANCELLED": 1_000_001}
    assert len(stored_indexes(cp, job_id)) == 4  # nothing was stored to be cancelled
    status, last = loop.api("GET", f"/jobs/{job_id}/tasks/999999")
    assert last["state"] == "CANCELLED"
    events = loop.api("GET", f"/jobs/{job_id}/events")[1]["events"]
    pending = [e for e in events if e["kind"] == "PendingTasksCancelled"]
    assert len(pending) == 1 and pending[0]["detail"]["tasks"] == 999_997


def test_storing_pending_tasks_is_guarded_against_racing_writers(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(10, max_concurrency=2))
    job_id = accepted["job_id"]
    read = cp.store.get_job(job_id)
    assert (read.materialized, read.pending, read.pending_state) == (3, 7, TaskState.QUEUED)
    first = cp.store.materialize(read, [sweeps.new_task(job_id, i) for i in (3, 4)], clock())
    assert [t.index for t in first] == [3, 4]
    cp.store.set_task_desired(job_id, 3, "CANCEL", [TaskState.QUEUED], clock())
    # A second scheduler run that read the job before: nothing written, task 3 not overwritten.
    assert cp.store.materialize(read, [sweeps.new_task(job_id, i) for i in (3, 4)], clock()) is None
    assert cp.store.get_task(job_id, 3).desired == "CANCEL"
    # A task cancelled ahead of its turn is skipped when its turn comes; the counts stay right.
    assert loop.api("POST", f"/jobs/{job_id}/tasks/6/cancel")[0] == 202
    stale = cp.store.get_job(job_id)
    assert (stale.materialized, stale.stored_ahead, stale.pending) == (5, 1, 4)
    assert cp.store.move_pending(read, TaskState.SUSPENDED, _event(job_id, clock()), clock()) is False
    stored = sweeps.materialize(cp, read, 3)  # from a stale read: it reads the job again
    assert [t.index for t in stored] == [5, 7, 8]
    job = cp.store.get_job(job_id)
    assert (job.materialized, job.stored_ahead, job.pending) == (9, 0, 1)
    assert job.counts == {"QUEUED": 9, "CANCELLED": 1}
    assert cp.store.get_task(job_id, 6).state == TaskState.CANCELLED


def _event(job_id: str, at: Any) -> Any:
    from spotrun.domain.model import TimelineEvent

    return TimelineEvent(job_id, at, "PendingTasksSuspended", "test", None, None, {})


def test_a_listing_shows_each_task_once_while_the_sweep_is_being_stored(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", sweep_of(12, max_concurrency=6))
    job_id = accepted["job_id"]
    _, page = loop.api("GET", f"/jobs/{job_id}/tasks", limit="2")
    seen = [t["index"] for t in page["tasks"]]
    loop.drain()  # meanwhile the scheduler stores and admits tasks 3-5 (the listing began with 0-2 stored)
    assert stored_indexes(cp, job_id) == set(range(6))
    token = page["next_token"]
    states = {}
    while token:
        _, page = loop.api("GET", f"/jobs/{job_id}/tasks", limit="2", next_token=token)
        seen += [t["index"] for t in page["tasks"]]
        states.update({t["index"]: t["state"] for t in page["tasks"]})
        token = page["next_token"]
    assert seen == list(range(12))
    assert all(states[i] == "LAUNCHING" for i in (3, 4, 5)) and all(states[i] == "QUEUED" for i in range(6, 12))
