"""Malformed and foreign messages on every queue: scheduler (SNS envelope), reports,
interruptions (EventBridge). Each is dropped, never retried: the batch reports no failure for it, a
malformed one is logged and counted in the "MalformedMessages" metric, and the good records of the
same batch are processed.

(tests/integration/test_task_flow.py checks the plain cases through moto's queues; this adds the
SNS envelope, the wrong shapes, the unknown jobs and instances, and batches mixing good and bad.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from spotrun import jobs
from spotrun.attempts import claim
from spotrun.domain.messages import AttemptRef, CompletionReport, ControlMessage, ProgramResult
from spotrun.domain.model import Task, TaskState
from spotrun.handlers import common, finisher, interruption, scheduler
from spotrun_local.pump import SqsPump
from tests.fuzz.support import sns_envelope, sqs_event, table_items
from tests.support import eventbridge_event

UNKNOWN_JOB = "j-0000000000000000dead"
JOB = {"name": "drops", "command": ["python", "pi.py"], "checkpoint": {"method": "signal"}, "tasks": 3}
HEARTBEAT = {"job_id": UNKNOWN_JOB, "index": 0, "attempt": 1, "instance_id": "i-0abc", "sent_at": "2026-11-23T12:00:00Z"}
REPORT = {**HEARTBEAT, "outcome": "completed", "program": {"exit_code": 0}}
DEEP = "[" * 5000 + "]" * 5000  # json.loads raises RecursionError, which is no ValueError
SPOT = "EC2 Spot Instance Interruption Warning"
STATE = "EC2 Instance State-change Notification"

MALFORMED = "MalformedMessages"
# Each bad record: (body, the metric its drop is counted in, or None when it leaves no metric).
BAD_CONTROL: dict[str, tuple[str, str | None]] = {
    "envelope not JSON": ("not json at all", MALFORMED),
    "empty body": ("", MALFORMED),
    "envelope an array": ('["Message"]', MALFORMED),
    "envelope a string": ('"Message"', MALFORMED),
    "envelope without Message": (json.dumps({"Type": "Notification", "MessageId": "m"}), MALFORMED),
    "Message not JSON": (sns_envelope("not json"), MALFORMED),
    "Message empty": (sns_envelope(""), MALFORMED),
    "Message an array": (sns_envelope("[1, 2]"), MALFORMED),
    "Message null": (sns_envelope("null"), MALFORMED),
    "Message without job_id": (sns_envelope(json.dumps({"type": "JobSubmitted"})), MALFORMED),
    "Message with a numeric job_id": (sns_envelope(json.dumps({"type": "JobSubmitted", "job_id": 7})), MALFORMED),
    "Message an object, not a string": (json.dumps({"Type": "Notification", "Message": {"type": "x", "job_id": "j"}}),
                                        MALFORMED),
    "a raw control message (no envelope)": (json.dumps({"type": "JobSubmitted", "job_id": UNKNOWN_JOB}), MALFORMED),
    "an unknown job": (sns_envelope(ControlMessage(type="JobSubmitted", job_id=UNKNOWN_JOB).model_dump_json()), None),
    "a foreign message type": (sns_envelope(json.dumps({"type": "Hello", "job_id": UNKNOWN_JOB})), MALFORMED),
    "a 4 kB type": (sns_envelope(json.dumps({"type": "x" * 4096, "job_id": UNKNOWN_JOB})), MALFORMED),
    "a job id not spotrun's": (sns_envelope(json.dumps({"type": "JobSubmitted", "job_id": "../etc/passwd"})), MALFORMED),
    # longer than a DynamoDB key may be: the reconcile's first read would fail, and fail again on every retry
    "a 3 kB job id": (sns_envelope(json.dumps({"type": "JobSubmitted", "job_id": "j-" + "0" * 3000})), MALFORMED),
    "an index beyond the task limit": (sns_envelope(json.dumps({"type": "TasksRunnable", "job_id": UNKNOWN_JOB,
                                                                "indexes": [10**40]})), MALFORMED),
    "a negative index": (sns_envelope(json.dumps({"type": "TasksRunnable", "job_id": UNKNOWN_JOB, "indexes": [-1]})),
                         MALFORMED),
    "a 2 kB reason": (sns_envelope(json.dumps({"type": "JobControl", "job_id": UNKNOWN_JOB, "reason": "x" * 2048})),
                      MALFORMED),
    "envelope 5,000 levels deep": (DEEP, MALFORMED),
    "Message 5,000 levels deep": (sns_envelope(DEEP), MALFORMED),
    "a lone surrogate in the reason": (sns_envelope(json.dumps({"type": "JobControl", "job_id": UNKNOWN_JOB,
                                                                "reason": "\ud800"})), MALFORMED),
}
BAD_REPORTS: dict[str, tuple[str, str | None]] = {
    "not JSON": ("not json at all", MALFORMED),
    "an array": ("[1]", MALFORMED),
    "foreign JSON": (json.dumps({"hello": "world"}), MALFORMED),
    "a heartbeat (as the agent once sent them)": (json.dumps(HEARTBEAT), MALFORMED),
    "an unknown outcome": (json.dumps({**REPORT, "outcome": "exploded"}), MALFORMED),
    "a word exit code": (json.dumps({**REPORT, "program": {"exit_code": "zero"}}), MALFORMED),
    "a 9 kB log tail": (json.dumps({**REPORT, "program": {"exit_code": 0, "log_tail": "x" * 9000}}), MALFORMED),
    "outputs an object": (json.dumps({**REPORT, "outputs": {"a": 1}}), MALFORMED),
    "5,000 levels deep": (DEEP, MALFORMED),
    # "completed" says the program ran to its end: without its exit status there is no result to judge
    "completed without a program": (json.dumps({**REPORT, "program": None}), MALFORMED),
    "completed without an exit code or signal": (json.dumps({**REPORT, "program": {"log_tail": "x"}}), MALFORMED),
    "a lone surrogate in the log tail": (json.dumps({**REPORT, "program": {"exit_code": 0, "log_tail": "\udfff"}}),
                                         MALFORMED),
    "an unknown job": (json.dumps(REPORT), None),
}
BAD_EVENTS: dict[str, tuple[str, str | None]] = {
    "not JSON": ("not json at all", MALFORMED),
    "empty": ("", MALFORMED),
    "5,000 levels deep": (DEEP, MALFORMED),
    "an instance action 5,000 levels deep": (json.dumps(eventbridge_event(SPOT, {"instance-id": "i-0abc"}))[:-2]
                                             + ', "instance-action": ' + DEEP + "}}", MALFORMED),
    "an array": ("[1]", "IgnoredEvents"),
    "a number": ("5", "IgnoredEvents"),
    "foreign JSON": (json.dumps({"hello": "world"}), "IgnoredEvents"),
    "a foreign source": (json.dumps(eventbridge_event("Object Created", {"bucket": {"name": "b"}}, source="aws.s3")),
                         "IgnoredEvents"),
    "no detail": (json.dumps({**eventbridge_event(SPOT, {}), "detail": None}), "IgnoredEvents"),
    "a string detail": (json.dumps({**eventbridge_event(SPOT, {}), "detail": "x"}), "IgnoredEvents"),
    "no instance id": (json.dumps(eventbridge_event(SPOT, {"instance-action": "terminate"})), "IgnoredEvents"),
    "a state without instance": (json.dumps(eventbridge_event(STATE, {"state": "terminated"})), "IgnoredEvents"),
    "a running instance": (json.dumps(eventbridge_event(STATE, {"instance-id": "i-0abc", "state": "running"})),
                           "IgnoredEvents"),
    "an unknown instance": (json.dumps(eventbridge_event(SPOT, {"instance-id": "i-0000000000000dead"})), None),
    "a numeric instance id": (json.dumps(eventbridge_event(SPOT, {"instance-id": 123})), "IgnoredEvents"),
    "a list instance id": (json.dumps(eventbridge_event(SPOT, {"instance-id": ["i-1"]})), "IgnoredEvents"),
    "an instance id not EC2's": (json.dumps(eventbridge_event(SPOT, {"instance-id": "i-0unknown00000000"})),
                                 "IgnoredEvents"),
    "a 4 kB instance id": (json.dumps(eventbridge_event(SPOT, {"instance-id": "i-" + "0" * 4096})), "IgnoredEvents"),
    "a 4 kB instance id rebalanced": (json.dumps(eventbridge_event("EC2 Instance Rebalance Recommendation",
                                                                   {"instance-id": "i-" + "a" * 4096})), "IgnoredEvents"),
    "a 4 kB instance id lost": (json.dumps(eventbridge_event(STATE, {"instance-id": "i-" + "f" * 4096,
                                                                     "state": "terminated"})), "IgnoredEvents"),
    "an unknown instance lost": (json.dumps(eventbridge_event(STATE, {"instance-id": "i-00000000000000901",
                                                                      "state": "terminated"})), None),
    "a health event for nobody": (json.dumps({**eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "affectedEntities": [{"entityValue": "i-0ff"}, "x"],
        "startTime": 5}, source="aws.health")}), None),
    "a health event naming no instance": (json.dumps({**eventbridge_event("AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange",
        "affectedEntities": [{"entityValue": "i-" + "0" * 4096}, {"entityValue": "vol-0abc"}, {"entityValue": 5}]},
        source="aws.health")}), "IgnoredEvents"),
    "a naive event time": (json.dumps({**eventbridge_event(SPOT, {"instance-id": "i-0000000000000beef"}),
                                       "time": "2026-11-23T10:00:00"}), None),
}


@pytest.fixture
def dropped() -> Iterator[list[logging.LogRecord]]:
    """The "dropped a malformed message" log records (the Powertools logger does not propagate)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "dropped a malformed message":
                records.append(record)

    underlying, handler = logging.getLogger(common.logger.name), Keep(logging.WARNING)
    underlying.addHandler(handler)
    try:
        yield records
    finally:
        underlying.removeHandler(handler)


def emitted(captured: str, name: str) -> float:
    """The total of metric `name` in the EMF documents Powertools printed."""
    total = 0.0
    for line in captured.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document and name in document:
            values = document[name]
            total += sum(values) if isinstance(values, list) else values
    return total


def run_mixed(handler: Callable[..., dict[str, Any]], cp: Any, context: Any, good: list[str],
              bad: dict[str, tuple[str, str | None]], capsys: pytest.CaptureFixture[str],
              dropped: list[logging.LogRecord]) -> str:
    """One batch: the good records first and last, every bad one in between; returns the captured stdout."""
    capsys.readouterr()
    bodies = [good[0], *(body for body, _ in bad.values()), *good[1:]]
    event = sqs_event(*bodies)
    names = {r["messageId"]: name for r, name in zip(event["Records"][1:], bad, strict=False)}
    answer = handler(event, context, control=cp)
    failed = [names.get(f["itemIdentifier"], "a good record") for f in answer["batchItemFailures"]]
    assert failed == [], f"reported failed (so retried): {failed}"
    captured = capsys.readouterr().out
    malformed = [name for name, (_, metric) in bad.items() if metric == MALFORMED]
    assert emitted(captured, MALFORMED) == len(malformed)
    assert sorted(names[r.message_id] for r in dropped) == sorted(malformed)  # type: ignore[attr-defined]
    assert all(r.problem for r in dropped)  # type: ignore[attr-defined]
    for metric in {metric for _, metric in bad.values() if metric not in (None, MALFORMED)}:
        expected = sum(1 for _, m in bad.values() if m == metric)
        assert emitted(captured, metric) >= expected, metric
    return captured


def submitted(cp: Any) -> str:
    job, created = jobs.submit_job(cp, JOB, "tester")
    assert created
    return job.job_id


def control(job_id: str) -> str:
    return sns_envelope(ControlMessage(type="JobSubmitted", job_id=job_id).model_dump_json())


def launched(cp: Any, context: Any) -> list[Task]:
    job_id = submitted(cp)
    assert scheduler.handler(sqs_event(control(job_id)), context, control=cp) == {"batchItemFailures": []}
    tasks = [cp.store.get_task(job_id, index) for index in range(JOB["tasks"])]
    assert all(t.state == TaskState.LAUNCHING and t.instance_id for t in tasks), tasks
    return tasks


def running(cp: Any, context: Any) -> list[Task]:
    tasks = launched(cp, context)
    for task in tasks:
        claim(cp, AttemptRef(job_id=task.job_id, index=task.index, attempt=task.attempt, instance_id=task.instance_id))
    return [cp.store.get_task(t.job_id, t.index) for t in tasks]


def test_the_scheduler_drops_bad_control_messages_and_reconciles_the_good_ones(
        module_cp: Any, context: Any, capsys: pytest.CaptureFixture[str], dropped: list[logging.LogRecord]) -> None:
    first, second = submitted(module_cp), submitted(module_cp)
    run_mixed(scheduler.handler, module_cp, context, [control(first), control(second)], BAD_CONTROL, capsys, dropped)
    for job_id in (first, second):
        states = {module_cp.store.get_task(job_id, i).state for i in range(JOB["tasks"])}
        assert states == {TaskState.LAUNCHING}, (job_id, states)


def test_reports_bad_ones_dropped_good_ones_applied(
        module_cp: Any, context: Any, capsys: pytest.CaptureFixture[str], dropped: list[logging.LogRecord]) -> None:
    tasks = running(module_cp, context)
    at = module_cp.clock.advance(60)

    def done(task: Task) -> str:
        return CompletionReport(job_id=task.job_id, index=task.index, attempt=task.attempt,
                                instance_id=task.instance_id, sent_at=at, outcome="completed",
                                program=ProgramResult(exit_code=0, exec_seconds=5.0)).model_dump_json()

    run_mixed(finisher.handler, module_cp, context, [done(tasks[0]), done(tasks[1])], BAD_REPORTS, capsys, dropped)
    assert [module_cp.store.get_task(t.job_id, t.index).state for t in tasks] == [
        TaskState.SUCCEEDED, TaskState.SUCCEEDED, TaskState.RUNNING]


def test_interruptions_bad_ones_dropped_good_ones_acted_on(
        module_cp: Any, context: Any, capsys: pytest.CaptureFixture[str], dropped: list[logging.LogRecord]) -> None:
    tasks = running(module_cp, context)
    at = module_cp.clock.advance(60)
    good = [json.dumps(eventbridge_event(SPOT, {"instance-id": t.instance_id, "instance-action": "terminate"},
                                         at=at - timedelta(seconds=1))) for t in tasks[:2]]
    run_mixed(interruption.handler, module_cp, context, good, BAD_EVENTS, capsys, dropped)
    after = [module_cp.store.get_task(t.job_id, t.index) for t in tasks]
    assert [t.attempt for t in after] == [2, 2, 1]  # the two warned tasks were replaced at once
    assert after[2].state == TaskState.RUNNING


@pytest.mark.parametrize(("handler", "body"), [
    *((scheduler.handler, body) for body, _ in BAD_CONTROL.values()),
    *((finisher.handler, body) for body, _ in BAD_REPORTS.values()),
    *((interruption.handler, body) for body, _ in BAD_EVENTS.values()),
], ids=[*(f"scheduler-{n}" for n in BAD_CONTROL),
        *(f"report-{n}" for n in BAD_REPORTS), *(f"interruption-{n}" for n in BAD_EVENTS)])
def test_a_batch_of_only_a_bad_record_is_acknowledged_not_raised(module_cp: Any, context: Any, handler: Any,
                                                                 body: str) -> None:
    """A batch whose every record fails makes Powertools raise (the whole batch comes back): never for these."""
    assert handler(sqs_event(body), context, control=module_cp) == {"batchItemFailures": []}


def test_through_the_real_queues_bad_messages_are_deleted_not_dead_lettered(module_env: Any, module_cp: Any) -> None:
    """Published and sent as AWS would (the control topic's SNS subscription wraps the envelope itself)."""
    session, env = module_env
    sqs, sns = session.client("sqs", region_name="us-east-1"), session.client("sns", region_name="us-east-1")
    urls, dlqs = json.loads(env["SPOTRUN_QUEUE_URLS"]), json.loads(env["SPOTRUN_DLQ_URLS"])
    for message in ("not json", "[1]", json.dumps({"type": "JobSubmitted"}), json.dumps({"job_id": UNKNOWN_JOB}),
                    ControlMessage(type="JobSubmitted", job_id=UNKNOWN_JOB).model_dump_json()):
        sns.publish(TopicArn=module_cp.settings.control_topic_arn, Message=message,
                    MessageAttributes={"type": {"DataType": "String", "StringValue": "JobSubmitted"}})
    for queue, bodies in (("reports", BAD_REPORTS), ("interruptions", BAD_EVENTS)):
        for body, _ in bodies.values():
            if body:  # SQS refuses an empty body (and a NUL): the producer fails, nothing is queued
                try:
                    sqs.send_message(QueueUrl=urls[queue], MessageBody=body)
                except sqs.exceptions.ClientError:
                    assert "\x00" in body
    handlers = {"scheduler": scheduler.handler, "reports": finisher.handler,
                "interruptions": interruption.handler}
    for queue, handler in handlers.items():
        pump = SqsPump(sqs, urls[queue], partial(handler, control=module_cp), queue, visibility_timeout=0)
        assert pump.drain() > 0, queue
        for url in (urls[queue], dlqs[queue]):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) \
                == ("0", "0"), (queue, url)


# Records for a real running task whose numbers DynamoDB cannot store (magnitude 0 or 1E-130..9.99E+125,
# at most 38 digits) or that no honest agent sends: before their bounds, each failed its write on every
# delivery and went to the dead-letter queue. Now each fails validation and is dropped: no write at all.
UNSTORABLE_REPORTS = {
    "exit_code 10**40": {"program": {"exit_code": 10**40}},
    "exit_code -10**40": {"program": {"exit_code": -(10**40)}},
    "exec_seconds 1e200": {"program": {"exit_code": 0, "exec_seconds": 1e200}},
    "exec_seconds Infinity": {"program": {"exit_code": 0, "exec_seconds": float("inf")}},
    "unsaved_seconds 1e200": {"outcome": "interrupted", "unsaved_seconds": 1e200},
    "unsaved_seconds NaN": {"outcome": "interrupted", "unsaved_seconds": float("nan")},
    "checkpoint_seq 10**40": {"outcome": "interrupted", "checkpoint_seq": 10**40},
    "signal 10**40": {"program": {"signal": 10**40}},
    "a negative attempt": {"attempt": -2},
    "sent_at before year 1 in UTC": {"sent_at": "0001-01-01T00:00:00+01:00"},
}


def _raw_items(cp: Any, job_id: str) -> list[dict[str, Any]]:
    """The job's task, attempt and timeline items exactly as stored."""
    return sorted((item for item in table_items(cp) if job_id in item["pk"]["S"]), key=json.dumps)


def _body(task: Task, at: Any, change: dict[str, Any], **base: Any) -> str:
    return json.dumps({"job_id": task.job_id, "index": task.index, "attempt": task.attempt,
                       "instance_id": task.instance_id, "sent_at": at.isoformat(), **base, **change})


@pytest.mark.parametrize(("handler", "bad", "base"), [
    (finisher.handler, UNSTORABLE_REPORTS, {"outcome": "completed"}),
], ids=["reports"])
def test_numbers_the_store_cannot_keep_are_dropped_before_any_write(
        module_cp: Any, context: Any, capsys: pytest.CaptureFixture[str], dropped: list[logging.LogRecord],
        handler: Any, bad: dict[str, dict[str, Any]], base: dict[str, Any]) -> None:
    task = running(module_cp, context)[0]
    at = module_cp.clock.advance(30)
    before = _raw_items(module_cp, task.job_id)
    capsys.readouterr()
    event = sqs_event(*(_body(task, at, change, **base) for change in bad.values()))
    names = {r["messageId"]: name for r, name in zip(event["Records"], bad, strict=True)}
    assert handler(event, context, control=module_cp) == {"batchItemFailures": []}
    assert sorted(names[r.message_id] for r in dropped) == sorted(bad)  # type: ignore[attr-defined]
    assert emitted(capsys.readouterr().out, MALFORMED) == len(bad)
    assert _raw_items(module_cp, task.job_id) == before  # nothing written, not even half of a move
    # and the same task still takes a good one
    assert handler(sqs_event(_body(task, at, {"program": {"exit_code": 0}}, **base)), context,
                   control=module_cp) == {"batchItemFailures": []}
    assert _raw_items(module_cp, task.job_id) != before


def test_tiny_and_inexact_floats_are_rounded_and_stored(module_cp: Any, context: Any) -> None:
    """A progress of 1e-200 (the agent reads it from a file the program writes) is below DynamoDB's
    smallest number: the beat stores 0, not an error every beat; 0.1 + 0.2 is stored as 0.3."""
    tasks = running(module_cp, context)
    at = module_cp.clock.advance(30)
    assert module_cp.store.record_beat(tasks[0].job_id, 0, tasks[0].attempt, at, 1e-200)
    assert module_cp.store.record_beat(tasks[1].job_id, 1, tasks[1].attempt, at, 0.1 + 0.2)
    first, second = (module_cp.store.get_task(t.job_id, t.index) for t in tasks[:2])
    assert (first.progress, first.last_heartbeat_at) == (0, at)
    assert second.progress == 0.3
    report = _body(tasks[2], at, {"program": {"exit_code": 0, "exec_seconds": 1 / 3}}, outcome="completed")
    assert finisher.handler(sqs_event(report), context, control=module_cp) == {"batchItemFailures": []}
    assert module_cp.store.get_task(tasks[2].job_id, 2).state == TaskState.SUCCEEDED


def test_a_warning_with_a_naive_time_is_acted_on_once_and_acknowledged(
        module_cp: Any, context: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """EventBridge writes '...Z'; an event without a zone is UTC. It used to make the handler raise after it
    had replaced the task (comparing naive and aware times for the latency metric): retried, then dead-lettered."""
    task = running(module_cp, context)[0]
    at = module_cp.clock.advance(60)
    warning = {**eventbridge_event(SPOT, {"instance-id": task.instance_id, "instance-action": "terminate"}),
               "time": (at - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")}
    capsys.readouterr()
    assert interruption.handler(sqs_event(json.dumps(warning)), context, control=module_cp) == {"batchItemFailures": []}
    replaced = module_cp.store.get_task(task.job_id, task.index)
    assert replaced.attempt == 2 and replaced.state == TaskState.LAUNCHING
    assert emitted(capsys.readouterr().out, "SpotInterruptionWarningLatency") == 5.0


def test_an_event_naming_a_bad_instance_id_is_ignored_with_a_log_line(module_cp: Any, context: Any) -> None:
    ignored: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "ignored an instance event":
                ignored.append(record)

    underlying, keep = logging.getLogger(common.logger.name), Keep(logging.WARNING)
    underlying.addHandler(keep)
    try:
        for instance_id in ("i-" + "0" * 4096, "i-0UPPER", 123, "i-0abc; drop table"):
            event = eventbridge_event(SPOT, {"instance-id": instance_id})
            answer = interruption.handler(sqs_event(json.dumps(event)), context, control=module_cp)
            assert answer == {"batchItemFailures": []}
    finally:
        underlying.removeHandler(keep)
    problems = [r.problem for r in ignored]  # type: ignore[attr-defined]
    assert len(problems) == 4 and all(p.startswith("not an instance id") and len(p) < 200 for p in problems)
