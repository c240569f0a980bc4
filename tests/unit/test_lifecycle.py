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
