"""The wire messages' bounds: every message that validates can be written to DynamoDB, and every one
that could not be written fails validation (so the handlers drop it instead of retrying it into the
dead-letter queue: tests/fuzz/test_bad_messages.py feeds such records to the real handlers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spotrun.adapters.dynamo import serialize
from spotrun.domain.messages import (
    MAX_INDEX,
    MAX_INDEXES_PER_MESSAGE,
    CompletionReport,
    ControlMessage,
    ControlType,
)
from spotrun.resources import MessageType

REF = {"job_id": "j-0194f3a2b1c0a1b2c3d4", "index": 0, "attempt": 1, "instance_id": "i-0abc",
       "sent_at": "2026-11-23T12:00:00Z"}
REPORT = {**REF, "outcome": "completed"}

UNSTORABLE_REPORTS = {
    "exit_code 10**40": {"program": {"exit_code": 10**40}},
    "exit_code -10**40": {"program": {"exit_code": -(10**40)}},
    "signal 10**40": {"program": {"exit_code": None, "signal": 10**40}},
    "signal 0": {"program": {"exit_code": None, "signal": 0}},
    "exec_seconds 1e200": {"program": {"exit_code": 0, "exec_seconds": 1e200}},
    "exec_seconds NaN": {"program": {"exit_code": 0, "exec_seconds": float("nan")}},
    "exec_seconds negative": {"program": {"exit_code": 0, "exec_seconds": -1.0}},
    "unsaved_seconds 1e200": {"outcome": "interrupted", "unsaved_seconds": 1e200},
    "unsaved_seconds Infinity": {"outcome": "interrupted", "unsaved_seconds": float("inf")},
    "checkpoint_seq 10**40": {"outcome": "interrupted", "checkpoint_seq": 10**40},
    "attempt 0": {"attempt": 0},
    "a 2 kB output name": {"outputs": ["x" * 2048]},
}


@pytest.mark.parametrize("change", UNSTORABLE_REPORTS.values(), ids=UNSTORABLE_REPORTS)
def test_a_report_the_store_could_not_keep_fails_validation(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CompletionReport.model_validate({**REPORT, **change})


def test_nan_and_infinity_in_the_json_text_fail_validation() -> None:
    """json.loads reads NaN and Infinity (parse_body does); the models refuse them."""
    for text in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValidationError):
            CompletionReport.model_validate(json.loads(json.dumps(REPORT)[:-1] + f', "unsaved_seconds": {text}}}'))


def test_times_are_kept_in_utc_and_a_naive_one_is_utc() -> None:
    lost = {**REPORT, "outcome": "interrupted"}
    assert CompletionReport.model_validate({**lost, "sent_at": "2026-11-23T12:00:00"}).sent_at == \
        datetime(2026, 11, 23, 12, tzinfo=UTC)
    at = CompletionReport.model_validate({**lost, "sent_at": "2026-11-23T13:00:00+01:00"}).sent_at
    assert at == datetime(2026, 11, 23, 12, tzinfo=UTC) and at.utcoffset().total_seconds() == 0


def test_the_bounds_let_every_real_value_through() -> None:
    """What the agent really sends: exit codes 0..255, signals, long runs."""
    report = CompletionReport.model_validate({**REPORT, "program": {"exit_code": 255, "exec_seconds": 30 * 86_400.5,
                                                                    "log_tail": "done"},
                                              "unsaved_seconds": 12.345, "checkpoint_seq": 7})
    killed = CompletionReport.model_validate({**REPORT, "program": {"exit_code": None, "signal": 9}})
    assert (report.program.exit_code, killed.program.signal) == (255, 9)
    serialize(report.model_dump())


def test_control_message_types_are_the_ones_the_control_topic_carries() -> None:
    known = {v for k, v in vars(MessageType).items() if not k.startswith("_") and isinstance(v, str)}
    assert set(ControlType.__args__) == known


@pytest.mark.parametrize("change", [
    {"type": "Hello"}, {"type": "x" * 4096}, {"job_id": "j-" + "0" * 3000}, {"job_id": "J-0194F3A2B1C0A1B2C3D4"},
    {"job_id": ""}, {"job_id": "j-0194f3a2b1c0a1b2c3d4\n"}, {"indexes": [-1]}, {"indexes": [MAX_INDEX + 1]},
    {"indexes": list(range(MAX_INDEXES_PER_MESSAGE + 1))}, {"reason": "x" * 1025},
], ids=["unknown type", "4 kB type", "3 kB job id", "upper-case job id", "empty job id", "job id and newline",
        "negative index", "index beyond the limit", "more indexes than a message holds", "1 kB reason"])
def test_control_messages_are_bounded(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ControlMessage.model_validate({"type": "TasksRunnable", "job_id": "j-0194f3a2b1c0a1b2c3d4", **change})


def test_control_messages_spotrun_sends_validate() -> None:
    from spotrun.jobs import idempotent_job_id, new_job_id

    for job_id in (new_job_id(), idempotent_job_id("arn:aws:iam::123456789012:user/alice", "key")):
        ControlMessage(type=MessageType.JOB_CONTROL, job_id=job_id, indexes=[0, 100_000], reason="cancel-task")


NUMBERS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e-120, max_value=1e-120),
    st.sampled_from([0.1 + 0.2, 1 / 3, 1e-131, 9.99e125, 1e126, 2**53, 2**63, 10**38, 10**39]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exit_code=NUMBERS, signal=NUMBERS, exec_seconds=NUMBERS, unsaved=NUMBERS, seq=NUMBERS)
def test_every_report_that_validates_can_be_stored(exit_code: Any, signal: Any, exec_seconds: Any, unsaved: Any,
                                                   seq: Any) -> None:
    program = {"exit_code": exit_code, "signal": signal, "exec_seconds": exec_seconds}
    body = {**REPORT, "program": {k: v for k, v in program.items() if v is not None}, "unsaved_seconds": unsaved,
            "checkpoint_seq": seq}
    try:
        report = CompletionReport.model_validate(body)
    except ValidationError:
        return
    serialize(report.model_dump())
    if report.unsaved_seconds is not None:
        serialize({"unsaved_seconds": round(report.unsaved_seconds, 3)})  # what spotrun.attempts writes


@pytest.mark.parametrize(("program", "valid"), [
    (None, False), ({}, False), ({"log_tail": "done"}, False),
    ({"exit_code": 0}, True), ({"exit_code": 3}, True), ({"signal": 9}, True),
])
def test_a_completed_attempt_says_how_its_program_ended(program, valid):
    """'completed' with no exit code and no signal said nothing: it used to fail the task with "program
    exited with code None"."""
    body = {**REPORT, "program": program}
    if valid:
        assert CompletionReport.model_validate(body).program is not None
    else:
        with pytest.raises(ValidationError, match="exit code or signal"):
            CompletionReport.model_validate(body)
    for outcome in ("interrupted", "suspended", "cancelled", "environment_error", "input_error"):
        assert CompletionReport.model_validate({**body, "outcome": outcome}).outcome == outcome
