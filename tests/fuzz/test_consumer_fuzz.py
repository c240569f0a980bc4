"""Fuzz the three SQS consumers (scheduler, finisher, interruption) with generated record
bodies, as test_api_fuzz.py fuzzes the API: random JSON of every type, nested thousands of levels deep,
numbers of thousands of digits, text with lone surrogates (which JSON's \\u escapes can spell and no
UTF-8 can), NaN and Infinity, and real messages (an SNS envelope, a completion report, an
EventBridge instance event) with fields replaced by any of those.

Whatever a record holds, its consumer acknowledges it: the batch never raises and reports no failure
(a failed record is retried five times into the dead-letter queue), and nothing is written for it.

The in-suite run is short and derandomized; for a longer one: SPOTRUN_FUZZ_EXAMPLES=500.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from spotrun.handlers import finisher, interruption, scheduler
from tests.fuzz.support import item_count, sns_envelope, sqs_event
from tests.support import eventbridge_event

EXAMPLES = int(os.environ.get("SPOTRUN_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("SPOTRUN_FUZZ_SEED", "20261205"))
JOB = "j-0000000000000000f022"  # no such job
ATTEMPT = {"job_id": JOB, "index": 0, "attempt": 1, "instance_id": "i-0f022", "sent_at": "2026-12-05T12:00:00Z"}
REPORT = {**ATTEMPT, "outcome": "completed", "program": {"exit_code": 0, "exec_seconds": 1.5, "log_tail": "ok"},
          "outputs": ["result.json"], "checkpoint_seq": 3}
CONTROL = {"type": "TasksRunnable", "job_id": JOB, "indexes": [0, 1], "reason": "fuzz"}
EVENTS = [
    eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-0000000000000f022",
                                                                 "instance-action": "terminate"}),
    eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-0000000000000f022",
                                                                 "state": "terminated"}),
    eventbridge_event("EC2 Instance Rebalance Recommendation", {"instance-id": "i-0000000000000f022"}),
    eventbridge_event("AWS Health Event", {"service": "EC2", "eventTypeCategory": "scheduledChange",
                                           "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
                                           "statusCode": "upcoming", "startTime": "Wed, 09 Dec 2026 10:00:00 GMT",
                                           "affectedEntities": [{"entityValue": "i-0000000000000f022"}]},
                      source="aws.health"),
]

# ------------------------------------------------------------------ what a body can hold

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=24)
HUGE = st.integers(1, 5000).map(lambda digits: int("9" * digits) if digits <= 4000 else -(10 ** 30))
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), HUGE.filter(lambda n: abs(n) < 10**4000),
                 st.floats(allow_nan=False, allow_infinity=False), TEXT)
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                     max_leaves=16)


def deep(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a": ' * depth + "1" + "}" * depth


DEEP = st.builds(deep, st.integers(200, 20_000), st.sampled_from(["list", "dict"]))
RAW = st.one_of(
    VALUE.map(lambda v: json.dumps(v)),  # lone surrogates come out as \\ud800 escapes
    DEEP,
    st.integers(300, 6000).map(lambda n: '{"memory_bytes": 1' + "0" * n + "}"),  # past Python's int digits limit
    st.sampled_from(["NaN", "[Infinity]", '{"progress": -Infinity}', "1e999999", "", " ", "null", "\x00", "}{"]),
    TEXT,  # not JSON, raw surrogates included
)


def mutated(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The template with some of its fields (at any depth) replaced by anything, or deep garbage added."""
    paths = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))

    walk(template, ())

    def apply(changes: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
        body = json.loads(json.dumps(template))
        for path, new in changes:
            if not path:
                continue
            target = body
            for key in path[:-1]:
                target = target.get(key) if isinstance(target, dict) else None
                if not isinstance(target, dict):
                    break
            else:
                target[path[-1]] = new
        return body

    return st.lists(st.tuples(st.sampled_from(paths), VALUE), min_size=1, max_size=3).map(apply)


def bodies(template: dict[str, Any], wrap: Callable[[str], str] = lambda body: body) -> st.SearchStrategy[str]:
    return st.one_of(RAW, mutated(template).map(lambda b: wrap(json.dumps(b))), RAW.map(wrap),
                     DEEP.map(lambda d: wrap(json.dumps(template)[:-1] + ', "extra": ' + d + "}")))


CONSUMERS = {
    "scheduler": (scheduler.handler, st.one_of(bodies(CONTROL, sns_envelope), bodies({
        "Type": "Notification", "MessageId": "m", "Message": json.dumps(CONTROL),
        "MessageAttributes": {"type": {"Type": "String", "Value": "TasksRunnable"}}}))),
    "finisher": (finisher.handler, bodies(REPORT)),
    "interruption": (interruption.handler, st.one_of(*(bodies(event) for event in EVENTS))),
}


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_every_record_is_acknowledged_and_changes_nothing(module_cp: Any, context: Any, consumer: str) -> None:
    handler, records = CONSUMERS[consumer]

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(batch=st.lists(records, min_size=1, max_size=4))
    def fuzz(batch: list[str]) -> None:
        before = item_count(module_cp)
        answer = handler(sqs_event(*batch), context, control=module_cp)
        assert answer == {"batchItemFailures": []}, answer
        assert item_count(module_cp) == before

    fuzz()
