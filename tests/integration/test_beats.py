"""The agent's own heartbeat: `TaskStore.record_beat` writes one attribute, `beat`, of its task item (the
task session may write nothing else: spotrun.access, WriteOwnBeat), so the fencing lives in the readers
(`items.beat_of`): a beat is a sign of life only for the attempt it names, once that attempt has claimed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotrun.adapters.dynamo import serialize
from spotrun.adapters.dynamo.codec import iso
from spotrun.adapters.dynamo.items import task_from
from spotrun.attempts import claim
from spotrun.domain.model import TaskState
from spotrun.handlers import reaper
from tests.integration.test_task_flow import JOB, Loop, ref


def running(cp: Any, env: Any, aws: Any, context: Any) -> tuple[Loop, str]:
    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", JOB)
    loop.drain()
    job_id = accepted["job_id"]
    claim(cp, ref(loop.task(job_id)))
    return loop, job_id


def raw(cp: Any, job_id: str, sk: str = "TASK") -> dict[str, Any] | None:
    return cp.store.client.get_item(TableName=cp.settings.table, ConsistentRead=True,
                                    Key={"pk": {"S": f"TASK#{job_id}#000000"}, "sk": {"S": sk}}).get("Item")


def put_beat(cp: Any, job_id: str, beat: Any) -> None:
    """What a program holding the task session could write there: anything at all."""
    cp.store.client.update_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{job_id}#000000"},
                                                                  "sk": {"S": "TASK"}},
                                UpdateExpression="SET beat = :b", ExpressionAttributeValues=serialize({":b": beat}))


def test_a_beat_is_one_attribute_and_reads_as_the_tasks_heartbeat_and_progress(cp, env, aws, context, clock):
    loop, job_id = running(cp, env, aws, context)
    before = raw(cp, job_id)
    at = clock.advance(30)
    assert cp.store.record_beat(job_id, 0, 1, at, 0.25)
    after = raw(cp, job_id)
    assert {k: v for k, v in after.items() if k != "beat"} == before  # nothing else written, no index key moved
    assert after["beat"] == {"M": {"attempt": {"N": "1"}, "at": {"S": iso(at)},
                                   "progress": {"N": "0.25"}}}
    task = loop.task(job_id)
    assert (task.last_heartbeat_at, task.progress) == (at, 0.25)
    # what the API answers, from the same fields
    status, body = loop.api("GET", f"/jobs/{job_id}/tasks")
    assert status == 200 and body["tasks"][0]["progress"] == 0.25
    # a beat without progress keeps none in the beat; the task then shows none from it
    assert cp.store.record_beat(job_id, 0, 1, clock.advance(60))
    assert "progress" not in raw(cp, job_id)["beat"]["M"] and loop.task(job_id).last_heartbeat_at == clock()


def test_an_older_attempts_beat_neither_overwrites_nor_counts(cp, env, aws, context, clock):
    loop, job_id = running(cp, env, aws, context)
    # The task moves on to attempt 2 (as after an interruption) while attempt 1's agent still beats
    cp.store.client.update_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{job_id}#000000"},
                                                                  "sk": {"S": "TASK"}},
                                UpdateExpression="SET attempt = :a", ExpressionAttributeValues={":a": {"N": "2"}})
    late = clock.advance(30)
    assert cp.store.record_beat(job_id, 0, 1, late, 0.5)  # no newer beat yet: stored...
    task = loop.task(job_id)
    assert task.last_heartbeat_at is None and task.progress == 0.5  # ...but no sign of life of attempt 2
    now = clock.advance(30)
    assert cp.store.record_beat(job_id, 0, 2, now, 0.1)
    assert not cp.store.record_beat(job_id, 0, 1, clock.advance(30), 0.9)  # the straggler is refused now
    task = loop.task(job_id)
    assert (task.last_heartbeat_at, task.progress) == (now, 0.1)


def test_a_beat_before_the_claim_is_no_sign_of_life_and_a_finished_task_keeps_its_last(cp, env, aws, context,
                                                                                      clock):
    loop = Loop(cp, env, aws, context)
    launching = loop.launch(JOB)
    job_id = launching.job_id
    # A program on the launched instance holds the attempt's session before its agent claims: its beat
    # does not make the launch look alive (the reaper ends launches that never start by their launch time)
    assert launching.state == TaskState.LAUNCHING
    assert cp.store.record_beat(job_id, 0, launching.attempt, clock.advance(10), 0.1)
    assert loop.task(job_id).last_heartbeat_at is None
    claim(cp, ref(launching))
    at = clock.advance(10)
    assert cp.store.record_beat(job_id, 0, launching.attempt, at, 0.7)
    cp.store.client.update_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{job_id}#000000"},
                                                                  "sk": {"S": "TASK"}},
                                UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "state"},
                                ExpressionAttributeValues={":s": {"S": "SUCCEEDED"}})
    task = loop.task(job_id)
    assert (task.last_heartbeat_at, task.progress) == (at, 0.7)  # what the API shows of a finished task


def test_a_beat_never_creates_an_item(cp, env, aws, context, clock):
    assert not cp.store.record_beat("j-0000000000000000beef", 0, 1, clock(), 0.5)
    assert raw(cp, "j-0000000000000000beef") is None


def test_items_a_session_could_create_beside_its_task_are_no_attempts(cp, env, aws, context, clock):
    """UpdateItem upserts: a program with the task session may create items of only a key and a beat in its
    own partition. Reading the task's attempts skips them."""
    loop, job_id = running(cp, env, aws, context)
    cp.store.client.update_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{job_id}#000000"},
                                                                  "sk": {"S": "ATTEMPT#9999"}},
                                UpdateExpression="SET beat = :b", ExpressionAttributeValues={":b": {"N": "1"}})
    assert [a.number for a in cp.store.attempts(job_id, 0)] == [1]
    status, _ = loop.api("GET", f"/jobs/{job_id}/tasks/0")
    assert status == 200


@pytest.mark.parametrize("beat", [
    "alive", 5, [], {}, {"attempt": "one", "at": "2026-11-23T12:00:00Z"}, {"attempt": 1},
    {"attempt": 1, "at": "yesterday"}, {"attempt": 1, "at": "2026-11-23T12:00:00"},  # no time zone: no beat
    {"attempt": 1, "at": 7}, {"attempt": [1], "at": "2026-11-23T12:00:00Z"},
], ids=["a string", "a number", "a list", "empty", "a word attempt", "no time", "a word time", "a naive time",
        "a number time", "a list attempt"])
def test_a_malformed_beat_counts_as_none_and_breaks_no_reader(cp, env, aws, context, clock, beat):
    loop, job_id = running(cp, env, aws, context)
    put_beat(cp, job_id, beat)
    task = loop.task(job_id)
    assert task.last_heartbeat_at is None and task.state == TaskState.RUNNING
    reaper.handler({}, context, control=cp)  # the reaper reads it without failing
    assert loop.task(job_id).state == TaskState.RUNNING


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(beat=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                             st.sampled_from(["attempt", "at", "progress", "x"]), inner, max_size=4), max_leaves=8),
       progress=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.text(max_size=5)))
def test_any_beat_reads_as_a_valid_task_or_as_no_beat(beat: Any, progress: Any) -> None:
    """Whatever the attribute holds, the task reads: a heartbeat time only from a well-formed beat of the
    current running attempt, a progress only within 0..1."""
    if isinstance(beat, dict) and progress is not None:
        beat = {**beat, "progress": progress}
    item = {"pk": "TASK#j-1#000000", "sk": "TASK", "job_id": "j-1", "index": 0, "state": "RUNNING", "attempt": 1,
            "beat": beat}
    task = task_from(item)
    assert task.progress is None or 0.0 <= task.progress <= 1.0
    if task.last_heartbeat_at is not None:
        assert isinstance(beat, dict) and int(beat["attempt"]) == 1 and task.last_heartbeat_at.tzinfo is not None


def test_items_written_before_the_beat_keep_their_heartbeat_and_progress(cp, env, aws, context, clock):
    loop, job_id = running(cp, env, aws, context)
    at = clock.advance(20)
    cp.store.client.update_item(TableName=cp.settings.table, Key={"pk": {"S": f"TASK#{job_id}#000000"},
                                                                  "sk": {"S": "TASK"}},
                                UpdateExpression="SET last_heartbeat_at = :h, progress = :p",
                                ExpressionAttributeValues=serialize({":h": at, ":p": 0.4}))
    assert (loop.task(job_id).last_heartbeat_at, loop.task(job_id).progress) == (at, 0.4)
    newer = clock.advance(60)
    assert cp.store.record_beat(job_id, 0, 1, newer, 0.6)
    assert (loop.task(job_id).last_heartbeat_at, loop.task(job_id).progress) == (newer, 0.6)


def test_the_reaper_finds_a_worker_whose_beats_stopped_and_not_one_that_beats(cp, env, aws, context, clock):
    loop, job_id = running(cp, env, aws, context)
    stale = cp.settings.heartbeat_stale_seconds
    instance = loop.task(job_id).instance_id
    cp.compute.client.terminate_instances(InstanceIds=[instance])  # EC2 says the worker is gone
    for _ in range(3):  # while it beats, the reaper leaves it alone
        assert cp.store.record_beat(job_id, 0, 1, clock.advance(stale - 30), 0.5)
        reaper.handler({}, context, control=cp)
        assert loop.task(job_id).state == TaskState.RUNNING
    clock.advance(stale + 1)  # then its beats stop
    reaper.handler({}, context, control=cp)
    task = loop.task(job_id)
    assert task.attempt == 2 or task.state != TaskState.RUNNING
