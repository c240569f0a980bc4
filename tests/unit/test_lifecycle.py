"""The task state machine and outcome classification, as tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spotrun.domain.lifecycle import TaskChange, after_completion, derive_job_state, environment_fault
from spotrun.domain.messages import CompletionReport, ProgramResult
from spotrun.domain.model import Desired, JobState, Scope, Task, TaskState
from spotrun.domain.spec import RetrySpec

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def running(**fields) -> Task:
    return Task(job_id="j-1", index=0, state=TaskState.RUNNING, attempt=2, pool="c6i.large@us-east-1a", **fields)


def report(outcome: str, exit_code: int | None = None, attempt: int = 2, signal: int | None = None) -> CompletionReport:
    program = ProgramResult(exit_code=exit_code, signal=signal) if outcome == "completed" else None
    return CompletionReport(job_id="j-1", index=0, attempt=attempt, instance_id="i-1", sent_at=NOW, outcome=outcome,
                            program=program, reason="why")


@pytest.mark.parametrize(
    ("outcome", "exit_code", "retries", "task_fields", "state", "scope"),
    [
        ("completed", 0, RetrySpec(), {}, TaskState.SUCCEEDED, None),
        ("completed", 2, RetrySpec(), {}, TaskState.FAILED, Scope.PROGRAM),
        ("completed", 2, RetrySpec(program=1), {}, TaskState.QUEUED, Scope.PROGRAM),
        ("completed", 2, RetrySpec(program=1), {"program_failures": 1}, TaskState.FAILED, Scope.PROGRAM),
        ("completed", 2, RetrySpec(program=3, exit_codes=[75]), {}, TaskState.FAILED, Scope.PROGRAM),
        ("completed", 75, RetrySpec(program=3, exit_codes=[75]), {}, TaskState.QUEUED, Scope.PROGRAM),
        ("environment_error", None, RetrySpec(environment=2), {}, TaskState.QUEUED, Scope.ENVIRONMENT),
        ("environment_error", None, RetrySpec(environment=2), {"environment_failures": 2}, TaskState.FAILED,
         Scope.ENVIRONMENT),
        # a reclaim keeps its progress and never uses up the environment budget
        ("interrupted", None, RetrySpec(environment=0), {"environment_failures": 9}, TaskState.QUEUED, Scope.ENVIRONMENT),
        ("input_error", None, RetrySpec(program=5, environment=5), {}, TaskState.FAILED, Scope.INPUT),
        ("suspended", None, RetrySpec(), {}, TaskState.SUSPENDED, None),
        ("cancelled", None, RetrySpec(), {}, TaskState.CANCELLED, None),
    ],
)
def test_a_completion_report_moves_the_task_by_the_scope_of_its_outcome(outcome, exit_code, retries, task_fields, state, scope):
    change = after_completion(running(**task_fields), report(outcome, exit_code), retries)
    assert change is not None
    assert change.to_state == state
    assert change.end_attempt is not None and change.end_attempt.scope == scope


def test_an_environment_fault_never_counts_against_the_program_budget():
    change = after_completion(running(), report("environment_error"), RetrySpec(program=0, environment=3))
    assert change.increments == {"environment_failures": 1, "consecutive_environment_failures": 1}
    assert "program_failures" not in change.increments
    assert change.set_fields["avoid_pools"] == ["c6i.large@us-east-1a"]


def test_a_program_failure_never_counts_against_the_environment_budget():
    change = after_completion(running(), report("completed", 1), RetrySpec(program=2))
    assert change.increments == {"program_failures": 1}


@pytest.mark.parametrize("attempt", [1, 3])
def test_reports_of_other_attempts_change_nothing(attempt):
    assert after_completion(running(), report("completed", 0, attempt=attempt), RetrySpec()) is None


@pytest.mark.parametrize("state", [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.QUEUED, TaskState.CANCELLED])
def test_reports_for_tasks_no_longer_running_change_nothing(state):
    task = Task(job_id="j-1", index=0, state=state, attempt=2)
    assert after_completion(task, report("completed", 0), RetrySpec()) is None


def test_the_signal_that_killed_a_program_is_named():
    change = after_completion(running(), report("completed", None, signal=9), RetrySpec())
    assert change.reason == "program killed by signal 9"


@pytest.mark.parametrize(("source", "target"), [
    (TaskState.SUCCEEDED, TaskState.QUEUED), (TaskState.FAILED, TaskState.RUNNING),
    (TaskState.QUEUED, TaskState.RUNNING), (TaskState.WAITING, TaskState.RUNNING),
])
def test_illegal_moves_are_refused(source, target):
    with pytest.raises(ValueError, match="cannot go"):
        TaskChange(Task(job_id="j", index=0, state=source, attempt=1), target, "x")


def test_environment_retries_exhausted_fail_the_task_with_the_reason():
    change = environment_fault(running(environment_failures=5), "instance lost", RetrySpec(environment=5), None)
    assert change.to_state == TaskState.FAILED and "environment retries exhausted" in change.reason


@pytest.mark.parametrize(("counts", "desired", "state"), [
    ({"QUEUED": 3}, Desired.RUN, JobState.QUEUED),
    ({"QUEUED": 2, "LAUNCHING": 1}, Desired.RUN, JobState.RUNNING),
    ({"SUCCEEDED": 2, "QUEUED": 1}, Desired.RUN, JobState.RUNNING),
    ({"SUCCEEDED": 3}, Desired.RUN, JobState.SUCCEEDED),
    ({"SUCCEEDED": 2, "FAILED": 1}, Desired.RUN, JobState.FAILED),
    ({"SUCCEEDED": 2, "CANCELLED": 1}, Desired.CANCEL, JobState.CANCELLED),
    ({"SUSPENDED": 2, "SUCCEEDED": 1}, Desired.SUSPEND, JobState.SUSPENDED),
    ({"RUNNING": 1, "SUSPENDED": 1}, Desired.SUSPEND, JobState.RUNNING),
    ({"SUCCEEDED": 3, "WAITING": 1}, Desired.RUN, JobState.RUNNING),
    ({"SUCCEEDED": 2, "FAILED": 1, "CANCELLED": 1}, Desired.RUN, JobState.FAILED),
])
def test_a_jobs_state_follows_from_its_task_counts(counts, desired, state):
    assert derive_job_state(counts, desired) == state


def finished_without(missing: list[str], exit_code: int = 0) -> CompletionReport:
    return CompletionReport(job_id="j-1", index=0, attempt=2, instance_id="i-1", sent_at=NOW, outcome="completed",
                            program=ProgramResult(exit_code=exit_code), missing_outputs=missing)


@pytest.mark.parametrize(
    ("missing", "retries", "task_fields", "state", "event"),
    [
        ([], RetrySpec(), {}, TaskState.SUCCEEDED, "TaskSucceeded"),
        (["pi.txt"], RetrySpec(), {}, TaskState.FAILED, "TaskFailed"),
        (["pi.txt"], RetrySpec(program=1), {}, TaskState.QUEUED, "TaskRetrying"),
        (["pi.txt"], RetrySpec(program=1), {"program_failures": 1}, TaskState.FAILED, "TaskFailed"),
        # exit_codes names the failures worth another run; a clean exit without its outputs is none of them
        (["pi.txt"], RetrySpec(program=3, exit_codes=[75]), {}, TaskState.FAILED, "TaskFailed"),
        # never against the environment's budget, whatever it holds
        (["pi.txt"], RetrySpec(program=0, environment=9), {}, TaskState.FAILED, "TaskFailed"),
    ],
)
def test_a_declared_output_that_matched_nothing_fails_the_program(missing, retries, task_fields, state, event):
    change = after_completion(running(**task_fields), finished_without(missing), retries)
    assert (change.to_state, change.event) == (state, event)
    if missing:
        assert change.end_attempt.scope == Scope.PROGRAM
        assert change.increments == {"program_failures": 1}
        assert change.reason.startswith("program exited with code 0 but declared output pi.txt matched no file")


def test_the_reason_names_the_missing_outputs_and_counts_the_rest():
    many = [f"out-{n}.txt" for n in range(12)]
    change = after_completion(running(), finished_without(["a.txt", "b/*.csv"]), RetrySpec())
    assert change.reason == "program exited with code 0 but declared outputs a.txt, b/*.csv matched no file"
    change = after_completion(running(), finished_without(many), RetrySpec())
    assert change.reason.endswith("out-8.txt, out-9.txt and 2 more matched no file")


def test_a_failed_program_is_reported_by_its_exit_code_even_when_outputs_are_missing():
    change = after_completion(running(), finished_without(["pi.txt"], exit_code=3), RetrySpec())
    assert change.to_state == TaskState.FAILED and change.reason == "program exited with code 3"


def test_an_image_fault_fails_the_task_at_once_whatever_its_environment_budget():
    image_report = CompletionReport(job_id="j-1", index=0, attempt=2, instance_id="i-1", sent_at=NOW,
                                    outcome="environment_error", reason="dmtcp: dmtcp_launch not found on PATH",
                                    fault="image", image_id="ami-0123456789abcdef0")
    change = after_completion(running(), image_report, RetrySpec(environment=9))
    assert change.to_state == TaskState.FAILED and change.end_attempt.scope == Scope.ENVIRONMENT
    assert change.reason == "environment: worker image ami-0123456789abcdef0: dmtcp: dmtcp_launch not found on PATH"
    assert change.increments == {"environment_failures": 1}
    # without the image's verdict the same outcome is an ordinary environment fault, retried elsewhere
    plain = after_completion(running(), image_report.model_copy(update={"fault": None}), RetrySpec(environment=9))
    assert plain.to_state == TaskState.QUEUED


def test_admission_may_fail_a_queued_task_that_no_instance_can_run():
    queued = Task(job_id="j-1", index=0, state=TaskState.QUEUED, attempt=0)
    assert TaskChange(queued, TaskState.FAILED, "TaskFailed", reason="image").to_state == TaskState.FAILED
