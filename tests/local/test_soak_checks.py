"""The soak's named checks, each on made-up evidence: a clean run passes every check, and each kind of loss
fails its own check and no other (the checks are judged by what they read, not by the wording of losses)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spotrun_local.programs import soak as program
from spotrun_local.soak.checks import CHECKS, Evidence, Findings, explain_dead_letter, figures, restores, verdict
from spotrun_local.soak.problems import Problem

STEPS = 5
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Event:
    kind: str
    index: int | None
    attempt: int | None = 1
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = T0


@dataclass
class Task:
    index: int
    state: str = "SUCCEEDED"
    attempt: int = 1
    pool: str = "c6i.large@us-east-1a"
    instance_id: str = "i-1"
    desired: str = "RUNNING"
    updated_at: datetime = T0
    reason: str = ""


@dataclass
class Job:
    state: str = "SUCCEEDED"
    counts: dict[str, int] = field(default_factory=dict)
    active: int = 0
    desired: str = "RUNNING"


def clean_evidence(tasks: int = 2) -> Evidence:
    problem = Problem("soak-6-p0", "signal", tasks, {}, job_id="j-1", state="SUCCEEDED")
    accs = [program.chain(problem.name, i, STEPS) for i in range(tasks)]
    outputs: dict[int, Any] = {i: {"acc": f"{acc:016x}", "steps": STEPS} for i, acc in enumerate(accs)}
    outputs[tasks] = {"combined": program.combined(accs)}
    events = [Event("TaskSucceeded", i) for i in range(tasks + 1)]
    records = {i: [{"sk": "ATTEMPT#1", "job_id": "j-1", "pool": "p", "outcome": "completed", "exit_code": 0}]
               for i in range(tasks + 1)}
    return Evidence(problem, Job(), {i: Task(i) for i in range(tasks + 1)}, events, records, outputs)


RECLAIM = {"instance": "i-7", "at": T0.timestamp(), "job_id": "j-1", "index": 0, "attempt": 1}


def findings(evidence: Evidence | None = None, **changes: Any) -> Findings:
    evidence = evidence or clean_evidence()
    return replace(Findings([evidence.problem], [evidence], finished=True, steps=STEPS, unwarned_reclaims=[RECLAIM]),
                   **changes)


def failed(found: Findings) -> set[str]:
    checks, losses = verdict(found)
    assert bool(losses) == (not all(checks.values())), (checks, losses)
    return {name for name, ok in checks.items() if not ok}


def test_a_clean_run_passes_every_check():
    checks, losses = verdict(findings())
    assert losses == [] and list(checks) == [check.__name__ for check in CHECKS] and all(checks.values())


def with_events(*events: Event) -> Evidence:
    evidence = clean_evidence()
    return replace(evidence, events=[*evidence.events, *events])


CASES = [
    ("the budget expired", lambda: findings(finished=False), {"every_problem_succeeded"}),
    ("a problem was never submitted", lambda: findings(problems=[Problem("p", "none", 1, {}), *findings().problems]),
     {"every_problem_succeeded"}),
    ("a job FAILED", lambda: findings(replace(clean_evidence(), job=Job(state="FAILED"))), {"every_problem_succeeded"}),
    ("a second accepted completion", lambda: findings(with_events(Event("TaskSucceeded", 1, attempt=2))),
     {"every_task_completed_exactly_once"}),
    ("no accepted completion of the combine step", lambda: findings(replace(
        clean_evidence(), events=[Event("TaskSucceeded", 0), Event("TaskSucceeded", 1)])),
     {"every_task_completed_exactly_once"}),
    ("a task stuck RUNNING (whose reason mentions an output)", lambda: findings(replace(
        clean_evidence(), tasks={**clean_evidence().tasks, 1: Task(1, state="RUNNING", reason="no output yet")})),
     {"nothing_stuck"}),
    ("a missing result.json", lambda: findings(replace(
        clean_evidence(), outputs={**clean_evidence().outputs, 0: None})), {"outputs_and_combined_results_correct"}),
    ("a wrong result", lambda: findings(replace(
        clean_evidence(), outputs={**clean_evidence().outputs, 1: {"acc": "00", "steps": STEPS}})),
     {"outputs_and_combined_results_correct"}),
    ("a wrong combined result", lambda: findings(replace(
        clean_evidence(), outputs={**clean_evidence().outputs, 2: {"combined": "x"}})),
     {"outputs_and_combined_results_correct"}),
    ("an orphan instance", lambda: findings(orphans=["i-9"]), {"no_orphan_instance"}),
    ("a restore of a checkpoint never seen committed", lambda: findings(with_events(
        Event("CheckpointRestored", 0, attempt=2, detail={"seq": 3}))), {"no_partial_checkpoint_restored"}),
    ("a program found a corrupt state", lambda: findings(corrupt=["attempt-2.log: CORRUPT"]),
     {"no_partial_checkpoint_restored"}),
    ("an unexplained dead letter", lambda: findings(dead_letters=[
        {"queue": "reports", "body": "{}", "explained": False}]), {"dead_letters_explained"}),
    ("no reclaim without a warning in the run", lambda: findings(unwarned_reclaims=[]),
     {"reclaims_without_warning_were_interruptions"}),
    ("a reclaim without a warning counted as an environment fault", lambda: findings(with_events(
        Event("EnvironmentFault", 0, detail={"reason": "environment: instance terminated"}, at=T0 + timedelta(seconds=2)))),
     {"reclaims_without_warning_were_interruptions"}),
]


def test_an_environment_fault_before_the_reclaim_is_not_the_reclaims():
    """The attempt's agent was killed (heartbeats stopped) and declared lost before its instance was reclaimed."""
    early = with_events(Event("EnvironmentFault", 0, detail={"reason": "heartbeats stopped"}, at=T0 - timedelta(seconds=30)),
                        Event("TaskInterrupted", 0, detail={"reason": "environment: spot reclaim without a warning"},
                              at=T0 + timedelta(seconds=1)))
    assert verdict(findings(early))[1] == []
    assert figures(findings(early))["reclaims_without_warning"] == {"injected": 1, "counted_as_interruptions": 1}


@pytest.mark.parametrize(("label", "make", "expected"), CASES, ids=[case[0] for case in CASES])
def test_each_loss_fails_its_own_check(label, make, expected):
    assert failed(make()) == expected


def test_a_restore_counts_as_committed_by_its_event_or_by_a_pointer_the_monitor_saw():
    evidence = with_events(
        Event("CheckpointCommitted", 0, detail={"seq": 1}, at=T0),
        Event("CheckpointCommitted", 0, detail={"seq": 2}, at=T0 + timedelta(seconds=5)),
        Event("CheckpointRestored", 0, attempt=2, detail={"seq": 1}, at=T0 + timedelta(seconds=9)),
        Event("CheckpointRestored", 1, attempt=2, detail={"seq": 4}, at=T0 + timedelta(seconds=9)))
    found = restores(evidence, {("j-1", 1): {4}})
    assert [(r.index, r.seq, r.source, r.older_than_newest) for r in found] == [
        (0, 1, "committed_by_timeline", True), (1, 4, "seen_as_pointer_only", False)]
    assert verdict(findings(evidence, pointers={("j-1", 1): {4}}))[1] == []
    assert figures(findings(evidence, pointers={("j-1", 1): {4}}))["checkpoints"] == {
        "committed": 2, "restored": 2, "restores": 2, "committed_by_timeline": 1, "seen_as_pointer_only": 1,
        "uncommitted": 0, "older_than_newest": 1}


def test_figures_count_attempts_runs_not_accepted_and_unreadable_records():
    evidence = clean_evidence()
    evidence.attempt_records[0] += [
        {"sk": "ATTEMPT#2", "job_id": "j-1", "pool": "p", "outcome": "completed", "exit_code": 0},
        {"sk": "ATTEMPT#3", "outcome": "not_launched"}]
    shown = figures(findings(evidence))
    assert shown["program_runs_to_completion_not_accepted"] == 1
    assert shown["problems"][0]["attempts"] == 4  # one per task and combine step, plus the second run
    assert shown["anomalies"] == ["soak-6-p0 task 0: attempt records without identity (the store's attempts() "
                                  "cannot read them): ['ATTEMPT#3']"]


@pytest.mark.parametrize(("history", "explained"), [
    ([], False), (["failed (injected fault)", "held", "cut (generation 2 dropped)"], True),
    (["failed (injected fault)", "failed"], False), (["handled"], False)])
def test_a_dead_letter_is_explained_only_by_injected_faults(history, explained):
    assert explain_dead_letter(history) is explained
