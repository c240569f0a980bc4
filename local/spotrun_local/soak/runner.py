"""One soak run: submit the problems while chaos runs, watch them finish, calm chaos, give the reaper its
grace, gather the evidence, judge it (`checks`) and assemble the report."""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spotrun_local.soak import evidence, injection
from spotrun_local.soak.checks import Findings, figures, verdict
from spotrun_local.soak.problems import FINISHED, Problem, problems, submit
from spotrun_local.soak.report import count_kinds, exit_codes, write_reports

DEFAULT_SEED = 6


@dataclass
class SoakOptions:
    seed: int = DEFAULT_SEED
    problems: int = 4
    tasks: int = 6
    steps: int = 70
    step_seconds: float = 0.5
    budget_seconds: float = 900.0
    stagger_seconds: float = 6.0
    tick_seconds: float = 2.0
    root: Path = Path(".spotrun/soak")
    out: Path | None = None
    quiet: bool = False
    chaos: dict[str, Any] = field(default_factory=dict)  # ChaosConfig overrides (tests)


class Soak:
    def __init__(self, options: SoakOptions):
        self.options = options
        self.chaos = injection.chaos(options.seed, options.chaos)
        self.pointers: dict[tuple[str, int], set[int]] = {}  # checkpoint seqs the monitor saw per task
        self.printed = 0.0

    def say(self, text: str) -> None:
        if not self.options.quiet:
            print(text, flush=True)

    def run(self) -> dict[str, Any]:
        opts = self.options
        started_wall = datetime.now(UTC)
        started = time.monotonic()
        runtime, window = injection.chaotic_runtime(self.chaos, opts.root.resolve() / f"run-{opts.seed}",
                                                    opts.tick_seconds, self._expected_seconds())
        work = problems(opts.seed, opts.problems, opts.tasks, opts.steps, opts.step_seconds)
        self.say(f"soak: seed {opts.seed}, {opts.problems} problems x {opts.tasks} tasks + combine, "
                 f"{opts.steps} steps of {opts.step_seconds}s each; traces from tick {window['start_tick']} "
                 f"({window['capacity_losses']} capacity losses in {window['ticks']} ticks of {opts.tick_seconds}s)")
        runtime.start()
        deadline = started + opts.budget_seconds
        outcome: dict[str, Any] = {}
        try:
            self.reader = evidence.Reader(runtime)
            self.chaos.start(duration=opts.budget_seconds)
            for k, problem in enumerate(work):
                if k:
                    time.sleep(opts.stagger_seconds)
                submit(runtime, problem, opts.seed, deadline)
                self.say(f"  submitted {problem.name} ({problem.method}) as {problem.job_id}")
            finished = self._watch(runtime, work, started, deadline)
            run_seconds = time.monotonic() - started
            self.chaos.calm()
            self.say(f"soak: {'all problems finished' if finished else 'BUDGET EXPIRED'} after {run_seconds:.0f}s; "
                     "chaos stopped, checking")
            orphans = self._await_no_instances(runtime)
            try:
                outcome = self._check(runtime, work, finished, orphans)
            except Exception as error:  # noqa: BLE001 - a check that cannot run is a failed check, with a report
                outcome = {"losses": [f"the checks could not run: {error!r}"], "checks": {},
                           "check_error": traceback.format_exc()}
            outcome["run_seconds"] = round(run_seconds, 1)
        finally:
            self.chaos.calm()
            runtime.stop()
        report = {
            "seed": opts.seed, "started_at": started_wall.isoformat(timespec="seconds"),
            "elapsed_seconds": round(time.monotonic() - started, 1),
            "options": {"problems": opts.problems, "tasks_per_problem": opts.tasks, "steps": opts.steps,
                        "step_seconds": opts.step_seconds, "budget_seconds": opts.budget_seconds,
                        "tick_seconds": opts.tick_seconds},
            "market_window": window,
            "tasks_total": sum(p.tasks + 1 for p in work),
            "faults": self.chaos.totals(),
            "control_plane_generations": runtime.counters.control_plane_starts,
            "agents_started": runtime.counters.agents_started,
            "agent_exit_codes": exit_codes(runtime),
            "timed_faults": self.chaos.events,
            "runtime_events": count_kinds(runtime.counters.events),
            **outcome,
        }
        report["ok"] = not report.get("losses")
        return report

    def _expected_seconds(self) -> float:
        opts = self.options
        task = opts.steps * opts.step_seconds + 10
        waves = max(1.0, opts.problems * opts.tasks / 10)
        return task * waves + task + opts.problems * opts.stagger_seconds

    def _watch(self, runtime: Any, work: list[Problem], started: float, deadline: float) -> bool:
        """Until every problem finished (True) or the deadline (False); notes every checkpoint pointer seen."""
        store = self.reader.store
        while time.monotonic() < deadline:
            for problem in work:
                if problem.job_id is None or problem.state in FINISHED:
                    continue
                job = store.get_job(problem.job_id)
                tasks, _ = store.list_tasks(problem.job_id, None, 1000, None)
                for task in tasks:
                    if task.checkpoint is not None:
                        self.pointers.setdefault((problem.job_id, task.index), set()).add(task.checkpoint.seq)
                if job is not None and job.state in FINISHED:
                    problem.state = str(job.state)
                    problem.finished_after = round(time.monotonic() - started, 1)
                    self.say(f"  {problem.name} {problem.state} after {problem.finished_after}s")
            if all(p.state in FINISHED for p in work):
                return True
            if time.monotonic() - self.printed > 15:
                self.printed = time.monotonic()
                faults = self.chaos.totals()
                self.say(f"  {time.monotonic() - started:5.0f}s  jobs done {sum(p.state in FINISHED for p in work)}"
                         f"/{len(work)}  instances {len(_running_instances(runtime))}  "
                         f"faults {sum(faults.values())}")
            time.sleep(1.0)
        return False

    def _await_no_instances(self, runtime: Any) -> list[str]:
        """Give the (now fault-free) reaper time to end what chaos left behind; what is still running after
        that is an orphan."""
        options = runtime.options
        grace = options.launch_stale_seconds + 4 * options.reaper_seconds + 10
        until = time.monotonic() + grace
        running = _running_instances(runtime)
        while running and time.monotonic() < until:
            time.sleep(2.0)
            running = _running_instances(runtime)
        return running

    def _check(self, runtime: Any, work: list[Problem], finished: bool, orphans: list[str]) -> dict[str, Any]:
        root = runtime.options.root
        findings = Findings(
            problems=work, evidence=[self.reader.evidence(p) for p in work if p.job_id is not None],
            finished=finished, steps=self.options.steps, pointers=self.pointers, orphans=orphans,
            corrupt=evidence.program_corruption(root), dead_letters=evidence.dead_letters(runtime, self.chaos.receipts),
            unwarned_reclaims=self.reader.unwarned_reclaims(runtime))
        checks, losses = verdict(findings)
        shown = figures(findings)
        return {
            "problems": shown["problems"],
            "reclaims_without_warning": shown["reclaims_without_warning"],
            "checks": checks,
            "checkpoints": shown["checkpoints"],
            "program_runs_to_completion_not_accepted": shown["program_runs_to_completion_not_accepted"],
            "agents_alive_at_end": [i.instance_id for i in runtime.instances.values()
                                    if i.process is not None and i.process.poll() is None
                                    and i.instance_id not in orphans],
            "dead_letters": findings.dead_letters,
            "handler_failures_without_injected_fault": evidence.uninjected_failures(self.chaos.receipts),
            "agent_failures": evidence.agent_failures(root),
            "anomalies": shown["anomalies"],
            "losses": losses,
        }


def _running_instances(runtime: Any) -> list[str]:
    found = []
    pages = runtime.ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:spotrun:managed", "Values": ["true"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            found.extend(i["InstanceId"] for i in reservation["Instances"])
    return sorted(found)


def run(options: SoakOptions, earlier: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One soak run in a fresh directory; with `options.out`, its report and those of the `earlier` runs
    are written there as {"runs": [...], "ok": ...}."""
    shutil.rmtree(options.root / f"run-{options.seed}", ignore_errors=True)
    report = Soak(options).run()
    if options.out is not None:
        write_reports(options.out, [*earlier, report])
    return report
