"""The soak's report: printed for a person, written as JSON (`--out`) for bench/results/."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any


def count_kinds(events: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(event["kind"] for event in events).items()))


def exit_codes(runtime: Any) -> dict[str, int]:
    """How agent processes ended: 0 done, 3 no attempt found, 4 gave up (agent failure), -9 SIGKILL, ..."""
    def code(instance: Any) -> int | None:
        if instance.exit_code is not None:
            return int(instance.exit_code)
        return instance.process.poll() if instance.process is not None else None

    codes = Counter("running" if (found := code(i)) is None else str(found) for i in runtime.instances.values())
    return dict(sorted(codes.items()))


def print_report(report: dict[str, Any]) -> None:
    print("\nsoak report")
    print(f"  seed {report['seed']}  elapsed {report['elapsed_seconds']}s  tasks {report['tasks_total']}  "
          f"control plane generations {report.get('control_plane_generations')}  agents {report.get('agents_started')}")
    print("  faults injected:")
    for kind, count in report["faults"].items():
        print(f"    {kind:<40} {count}")
    for problem in report.get("problems", []):
        print(f"  {problem['name']:<16} {problem['checkpointer']:<7} {problem['state']:<10} "
              f"after {problem['finished_after_seconds']}s  attempts {problem['attempts']}  "
              f"interruptions {problem['interruptions']}  checkpoints {problem['checkpoints_committed']} committed, "
              f"{problem['checkpoints_restored']} restored")
    print(f"  spot reclaims without a warning: {report.get('reclaims_without_warning')}")
    print(f"  agent processes by exit code: {report.get('agent_exit_codes')}")
    print(f"  checkpoints: {report.get('checkpoints')}")
    print(f"  program runs that completed but were not the accepted one: "
          f"{report.get('program_runs_to_completion_not_accepted')}")
    print(f"  handler failures without an injected fault: {report.get('handler_failures_without_injected_fault')}")
    if report.get("agent_failures"):
        print("  agents ending attempts on their own:")
        for line, count in report["agent_failures"].items():
            print(f"    {count:>4}  {line}")
    letters = report.get("dead_letters", [])
    print(f"  dead letters: {len(letters)}")
    for letter in letters:
        print(f"    [{letter['queue']}] {'explained' if letter['explained'] else 'UNEXPLAINED'}: "
              f"receives {letter['receives']}\n      {letter['body'][:300]}")
    print("  checks:")
    for name, ok in report.get("checks", {}).items():
        print(f"    {'ok  ' if ok else 'FAIL'} {name}")
    anomalies = report.get("anomalies", [])
    print(f"  anomalies (product defects that lost nothing this time): {len(anomalies)}")
    for anomaly in anomalies:
        print(f"    - {anomaly}")
    losses = report.get("losses", [])
    print(f"  losses: {len(losses)}")
    for loss in losses:
        print(f"    - {loss}")
    print("  result:", "PASS" if report["ok"] else "FAIL")


def write_reports(path: Path, reports: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = [{"seed": r["seed"], "ok": r["ok"], "elapsed_seconds": r["elapsed_seconds"], "tasks": r["tasks_total"],
                "faults_injected": sum(r["faults"].values()), "losses": len(r.get("losses", [])),
                "duplicate_completions": r.get("program_runs_to_completion_not_accepted"),
                "dead_letters": len(r.get("dead_letters", [])),
                "reclaims_without_warning": (r.get("reclaims_without_warning") or {}).get("injected", 0)}
               for r in reports]
    path.write_text(json.dumps({"ok": all(r["ok"] for r in reports), "summary": summary, "runs": reports},
                               indent=1, default=str) + "\n")
