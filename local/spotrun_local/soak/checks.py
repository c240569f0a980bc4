"""The soak's verdict: one named check per property it verifies, each a pure function of what the run left
behind (`Findings`) that returns the losses it found (none: the check passed).

- every_problem_succeeded: every problem was submitted, finished within the budget, and its job SUCCEEDED;
- every_task_completed_exactly_once: each task and combine step has one accepted completion on its
  timeline (one `TaskSucceeded`, no `TaskFailed`/`TaskCancelled`);
- nothing_stuck: every task and combine step is SUCCEEDED in the table;
- outputs_and_combined_results_correct: each `result.json` and `combined.json` equals the soak's own
  computation of the program;
- no_orphan_instance: nothing spotrun launched still runs after the grace;
- no_partial_checkpoint_restored: every restored checkpoint was seen committed (its event, or the
  task's pointer at that sequence seen by the soak's monitor), and no program found a corrupt state;
- dead_letters_explained: each dead letter's receives all met an injected fault, a hold-back or a
  control plane crash (`explain_dead_letter`);
- reclaims_without_warning_were_interruptions: the run reclaimed at least one spot instance with no
  warning before it, and no attempt so reclaimed was counted as an environment fault after it.
`figures` adds what the report shows besides (attempts, checkpoints, timelines, anomalies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spotrun_local.programs import soak as program
from spotrun_local.soak.problems import Problem

ENDS = ("TaskSucceeded", "TaskFailed", "TaskCancelled")


@dataclass
class Evidence:
    """What one submitted problem left behind, read once for every check."""

    problem: Problem
    job: Any  # the job as stored (None: missing)
    tasks: dict[int, Any]  # index -> task as stored
    events: list[Any]  # the job's timeline
    attempt_records: dict[int, list[dict[str, Any]]]  # index -> its attempt items, raw
    outputs: dict[int, dict[str, Any] | None]  # index -> result.json (combined.json for the combine step)
    account_active: int = 0

    @property
    def indexes(self) -> range:
        return range(self.problem.tasks + 1)

    def label(self, index: int) -> str:
        return f"{self.problem.name} {self.problem.kind(index)} {index}"


@dataclass
class Findings:
    problems: list[Problem]
    evidence: list[Evidence]  # of the problems that were submitted
    finished: bool  # every problem finished within the budget
    steps: int  # of each task's program
    pointers: dict[tuple[str, int], set[int]] = field(default_factory=dict)  # checkpoint seqs seen per task
    orphans: list[str] = field(default_factory=list)  # instances running after the grace
    corrupt: list[str] = field(default_factory=list)  # programs' lines reporting a corrupt state
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    # spot reclaims with no warning before them: instance, wall time (`at`), and the attempt the instance
    # served then (job_id, index, attempt; None when no attempt named it)
    unwarned_reclaims: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ the checks


def every_problem_succeeded(findings: Findings) -> list[str]:
    losses = [] if findings.finished else ["budget expired before every problem finished"]
    losses += [f"{p.name}: never submitted" for p in findings.problems if p.job_id is None]
    for ev in findings.evidence:
        job = ev.job
        if job is None or str(job.state) != "SUCCEEDED":
            losses.append(f"{ev.problem.name}: job is {job.state if job else 'missing'}" + (
                f" (counts {job.counts}, active {job.active}, desired {job.desired}; account active "
                f"{ev.account_active})" if job else ""))
    return losses


def every_task_completed_exactly_once(findings: Findings) -> list[str]:
    losses = []
    for ev in findings.evidence:
        for index in ev.indexes:
            ends = [e for e in ev.events if e.index == index and e.kind in ENDS]
            if len(ends) != 1 or ends[0].kind != "TaskSucceeded":
                losses.append(f"{ev.label(index)}: accepted completions {[(e.kind, e.attempt) for e in ends]} "
                              "(want exactly one TaskSucceeded)")
    return losses


def nothing_stuck(findings: Findings) -> list[str]:
    losses = []
    for ev in findings.evidence:
        for index in ev.indexes:
            task = ev.tasks.get(index)
            if task is None or str(task.state) != "SUCCEEDED":
                losses.append(f"{ev.label(index)}: {task.state if task else 'missing'} (stuck or lost)" + (
                    f" at attempt {task.attempt} (pool {task.pool}, instance {task.instance_id}, desired "
                    f"{task.desired}, updated {task.updated_at:%H:%M:%S}): {task.reason}" if task else ""))
    return losses


def outputs_and_combined_results_correct(findings: Findings) -> list[str]:
    losses = []
    for ev in findings.evidence:
        name, tasks = ev.problem.name, ev.problem.tasks
        for index in range(tasks):
            result, want = ev.outputs.get(index), program.chain(name, index, findings.steps)
            if result is None:
                losses.append(f"{name} task {index}: no result.json")
            elif int(result["acc"], 16) != want or result.get("steps") != findings.steps:
                losses.append(f"{name} task {index}: wrong output {result} (want acc {want:016x})")
        combined = ev.outputs.get(tasks)
        want_combined = program.combined([program.chain(name, i, findings.steps) for i in range(tasks)])
        if combined is None or combined.get("combined") != want_combined:
            losses.append(f"{name}: combined result {combined} != {want_combined}")
    return losses


def no_orphan_instance(findings: Findings) -> list[str]:
    return [f"orphan instance still running after the grace: {instance_id}" for instance_id in findings.orphans]


def no_partial_checkpoint_restored(findings: Findings) -> list[str]:
    losses = [f"{ev.problem.name} task {r.index}: attempt {r.attempt} restored checkpoint {r.seq}, which was never "
              "seen committed" for ev in findings.evidence for r in restores(ev, findings.pointers)
              if r.source == "uncommitted"]
    return losses + [f"a program found a corrupt checkpoint: {line}" for line in findings.corrupt]


def dead_letters_explained(findings: Findings) -> list[str]:
    return [f"unexplained dead letter on {letter['queue']}: {letter['body'][:200]}"
            for letter in findings.dead_letters if not letter["explained"]]


def reclaims_without_warning_were_interruptions(findings: Findings) -> list[str]:
    if not findings.unwarned_reclaims:
        return ["no spot instance was reclaimed without a warning in this run (nothing tested that)"]
    losses = []
    by_job = {ev.problem.job_id: ev for ev in findings.evidence}
    for reclaim in findings.unwarned_reclaims:
        ev = by_job.get(reclaim.get("job_id"))
        if ev is None:
            continue
        faults = [e for e in ev.events if e.kind == "EnvironmentFault" and e.index == reclaim["index"]
                  and e.attempt == reclaim["attempt"] and e.at.timestamp() >= reclaim["at"] - 1.0]
        losses += [f"{ev.label(reclaim['index'])}: attempt {reclaim['attempt']} reclaimed without a warning "
                   f"(instance {reclaim['instance']}) was counted as an environment fault: {e.detail.get('reason')}"
                   for e in faults]
    return losses


def explain_dead_letter(history: list[str]) -> bool:
    """A dead letter is explained when every receive that did not end in a delete met an injected fault, a
    hold-back or a control plane crash (a plain "failed" is a handler error nobody injected)."""
    return bool(history) and "failed" not in history and "handled" not in history


CHECKS: tuple[Callable[[Findings], list[str]], ...] = (
    every_problem_succeeded, every_task_completed_exactly_once, nothing_stuck, outputs_and_combined_results_correct,
    no_orphan_instance, no_partial_checkpoint_restored, dead_letters_explained,
    reclaims_without_warning_were_interruptions,
)


def verdict(findings: Findings) -> tuple[dict[str, bool], list[str]]:
    """Each check by name (True: passed), and every loss any check found."""
    checks: dict[str, bool] = {}
    losses: list[str] = []
    for check in CHECKS:
        found = check(findings)
        checks[check.__name__] = not found
        losses += found
    return checks, losses


# ------------------------------------------------------------------ restores and figures


@dataclass(frozen=True)
class Restore:
    index: int
    attempt: int | None
    seq: int
    # committed_by_timeline (its CheckpointCommitted event), seen_as_pointer_only (the monitor saw the task's
    # pointer at it) or uncommitted (neither: a partial checkpoint was restored)
    source: str
    older_than_newest: bool  # a newer checkpoint had been committed before this restore


def restores(ev: Evidence, pointers: dict[tuple[str, int], set[int]]) -> list[Restore]:
    committed: dict[int, dict[int, datetime]] = {}
    for e in ev.events:
        if e.kind == "CheckpointCommitted":
            committed.setdefault(e.index or 0, {})[e.detail["seq"]] = e.at
    found = []
    for e in ev.events:
        if e.kind != "CheckpointRestored":
            continue
        index, seq = e.index or 0, e.detail["seq"]
        if seq in committed.get(index, {}):
            source = "committed_by_timeline"
        elif seq in pointers.get((ev.problem.job_id or "", index), set()):
            source = "seen_as_pointer_only"
        else:
            source = "uncommitted"
        newer = any(s > seq and at < e.at for s, at in committed.get(index, {}).items())
        found.append(Restore(index, e.attempt, seq, source, newer))
    return found


def figures(findings: Findings) -> dict[str, Any]:
    """Per problem its attempts, checkpoints, interruptions and task timelines; the restores by source;
    program runs that completed but were not accepted; anomalies (defects that lost nothing this time)."""
    per_problem, anomalies = [], []
    duplicate_runs = 0
    counts = {"restores": 0, "committed_by_timeline": 0, "seen_as_pointer_only": 0, "uncommitted": 0,
              "older_than_newest": 0}
    committed_total = restored_total = 0
    for ev in findings.evidence:
        attempts = 0
        for index in ev.indexes:
            records = ev.attempt_records.get(index, [])
            partial = [r for r in records if "job_id" not in r or "pool" not in r]
            if partial:
                anomalies.append(f"{ev.label(index)}: attempt records without identity (the store's attempts() "
                                 f"cannot read them): {[r['sk'] for r in partial]}")
            completed = [r for r in records if r.get("outcome") == "completed" and r.get("exit_code") == 0]
            duplicate_runs += max(0, len(completed) - 1)
            attempts += sum(1 for r in records if r.get("outcome") != "not_launched")
        commits = sum(1 for e in ev.events if e.kind == "CheckpointCommitted")
        restored = restores(ev, findings.pointers)
        committed_total += commits
        restored_total += len(restored)
        for restore in restored:
            counts["restores"] += 1
            counts[restore.source] += 1
            counts["older_than_newest"] += restore.older_than_newest
        timelines: dict[int, list[str]] = {}
        for e in ev.events:
            if e.index is not None:
                seq = f"({e.detail['seq']})" if "seq" in e.detail else ""
                timelines.setdefault(e.index, []).append(f"{e.at:%H:%M:%S} {e.kind}#{e.attempt}{seq}")
        problem = ev.problem
        per_problem.append({
            "timelines": {str(k): v for k, v in sorted(timelines.items())},
            "name": problem.name, "job_id": problem.job_id, "checkpointer": problem.method, "tasks": problem.tasks,
            "state": str(ev.job.state) if ev.job else None, "finished_after_seconds": problem.finished_after,
            "attempts": attempts, "checkpoints_committed": commits, "checkpoints_restored": len(restored),
            "interruptions": sum(1 for e in ev.events if e.kind == "TaskInterrupted"),
        })
    unwarned = {(r.get("job_id"), r.get("index"), r.get("attempt")) for r in findings.unwarned_reclaims}
    counted = sum(1 for ev in findings.evidence for e in ev.events if e.kind == "TaskInterrupted"
                  and (ev.problem.job_id, e.index, e.attempt) in unwarned
                  and "without a warning" in str(e.detail.get("reason", "")))
    return {"problems": per_problem, "reclaims_without_warning": {
                "injected": len(findings.unwarned_reclaims), "counted_as_interruptions": counted},
            "checkpoints": {"committed": committed_total, "restored": restored_total, **counts},
            "program_runs_to_completion_not_accepted": duplicate_runs, "anomalies": anomalies}
