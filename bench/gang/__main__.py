"""Gang tasks on the local runtime: what a spot warning to one member of a gang costs.

    flock /tmp/spotrun-heavy.lock env PYTHONPATH=lambdas:worker:local:cli:. .venv/bin/python -m bench.gang

A 2-node ring all-reduce (`spotrun_local.programs.ring`: both ranks exchange their vectors over TCP every
step) runs as one gang task (`nodes: 2`) on two local instances (namespaces of their own, a loopback
address each), real agents against moto's server. Each run: the gang starts, takes one gang checkpoint
(asked for early), works on, then rank 1's instance gets a spot interruption warning; the gang takes its
final checkpoint, a new gang replaces it, restores and finishes. Measured per run, from the control
plane's timeline and the program's own logs (each step's end, wall clock):

- `warning_to_gang_running_seconds`: from the warning to the new gang's first step done (both ranks
  restored, the ring connected again, one exchange made);
- `work_lost_with_warning_seconds`: the steps the old gang did past its final checkpoint (which the
  new gang does again), as the time between the checkpoint's step and the old gang's last step;
- `correct`: the result equals the uninterrupted run's (`ring.reference`: the same arithmetic with no
  network) and the new gang resumed at the final checkpoint's step.

Both methods run (`--methods`): `signal` (the program saves its own state at a step the ranks agree on)
and `dmtcp` (every rank's processes under one DMTCP coordinator on rank 0, checkpointed together with
their connections; needs DMTCP built with spotrun's gang patch, as `make dmtcp` builds it). Under `dmtcp`
the program logs no "saved" line: the step DMTCP captured is the one before the new gang's first logged
step (the restored processes go on mid-run, over their restored connections, without building the ring
again), and the work lost is the old gang's steps past it. Writes bench/results/gang.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

from spotrun.domain.model import JobState  # noqa: E402
from spotrun.jobs import submit_job  # noqa: E402
from spotrun_local.market import MarketReplay, load_traces, steady_window  # noqa: E402
from spotrun_local.programs import ring  # noqa: E402
from spotrun_local.runtime import LocalRuntime, RuntimeOptions  # noqa: E402
from tests import support  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gang.json"
NODES, STEPS, SIZE, SLEEP = 2, 300, 64, 0.1
STEP_LINE = re.compile(r"rank 0: step (\d+) at ([0-9.]+)")
SAVED_LINE = re.compile(r"rank 0: saved at step (\d+) at ([0-9.]+)")
RESUMED_LINE = re.compile(r"rank 0: resumed at step (\d+)")
METHODS = ("signal", "dmtcp")
# each look asks the store on moto's server: five times a second, not to load the machine it measures
wait_for = partial(support.wait_for, every=0.2)


def job_spec(method: str = "signal") -> dict[str, Any]:
    return {"name": f"ring-{method}", "nodes": NODES, "outputs": ["result.json"],
            "command": [sys.executable, ring.__file__, "--steps", str(STEPS), "--size", str(SIZE), "--sleep",
                        str(SLEEP), "--log-steps"],
            "checkpoint": {"method": method, "interval": 3600}, "retries": {"environment": 3}}


def explain(runtime: LocalRuntime, job_id: str) -> str:
    events = [(e.kind, e.attempt, e.detail.get("rank"), e.at.strftime("%H:%M:%S.%f")[:-3])
              for e in runtime.cp.store.timeline(job_id, 300)]
    return f"timeline {events}"


def one_run(runtime: LocalRuntime, method: str = "signal") -> dict[str, Any]:
    store, s3, bucket = runtime.cp.store, runtime.session.client("s3"), runtime.cp.settings.bucket
    job, _ = submit_job(runtime.cp, job_spec(method), "bench")
    first = wait_for(lambda: (t := store.get_task(job.job_id, 0)).state == "RUNNING" and t.progress and t, 180,
                     "the gang to run")
    store.request_checkpoint(job.job_id, 0, first.attempt, runtime.cp.clock())
    wait_for(lambda: store.get_task(job.job_id, 0).checkpoint, 90, "the first gang checkpoint")
    time.sleep(4.0)  # work past it: a final checkpoint that failed would show as lost work
    warned_at = time.time()
    runtime.interrupt(first.gang_instances[1])
    done = wait_for(lambda: (j := store.get_job(job.job_id)).state in (JobState.SUCCEEDED, JobState.FAILED) and j,
                    300, "the gang to finish")
    final = store.get_task(job.job_id, 0)
    events = store.timeline(job.job_id, 500)

    def log(attempt: int) -> str:
        """Rank 0's log of an attempt (uploaded before its report; waited for in case it is not there yet)."""
        key = f"jobs/{job.job_id}/logs/0/attempt-{attempt}.log"

        def listed() -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job.job_id}/logs/").get(
                "Contents", [])]

        try:
            wait_for(lambda: key in listed(), 30, key)
        except AssertionError:  # timed out
            raise RuntimeError(f"no {key}; the logs there: {listed()}; {explain(runtime, job.job_id)}") from None
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()  # type: ignore[no-any-return]

    old, new = log(first.attempt), log(final.attempt)
    old_steps = [(int(s), float(t)) for s, t in STEP_LINE.findall(old)]
    new_logged = [(int(s), float(t)) for s, t in STEP_LINE.findall(new)]
    new_steps = [t for _, t in new_logged]
    if method == "dmtcp":  # the restored processes' first step follows the one DMTCP captured
        saved_step = new_logged[0][0] - 1
        saved_at = dict(old_steps)[saved_step]
        resumed = [saved_step] if "ring up" not in new else []  # a fresh start would build the ring again
    else:
        saved_step, saved_at = [(int(s), float(t)) for s, t in SAVED_LINE.findall(old)][-1]
        resumed = [int(s) for s in RESUMED_LINE.findall(new)]
    result = json.loads(s3.get_object(Bucket=bucket, Key=f"jobs/{job.job_id}/outputs/0/result.json")["Body"].read())
    correct = (done.state == JobState.SUCCEEDED and result["digest"] == ring.reference(NODES, STEPS, SIZE)
               # the saved step may be one past the last logged one: ring.py logs "saved at step N" before
               # "step N", and the agent stops the old gang right after its final checkpoint
               and result["steps"] == STEPS and resumed == [saved_step] and 0 < saved_step <= old_steps[-1][0] + 1)
    return {
        "job_id": job.job_id, "state": str(done.state), "correct": correct,
        "interruptions": sum(e.kind == "TaskInterrupted" for e in events),
        "gang_checkpoints_committed": sum(e.kind == "CheckpointCommitted" and e.detail.get("ranks") == NODES
                                          for e in events),
        "gang_restores": len({e.attempt for e in events if e.kind == "CheckpointRestored"}),
        "warning_to_gang_running_seconds": round(new_steps[0] - warned_at, 3),
        "work_lost_with_warning_seconds": round(max(0.0, old_steps[-1][1] - saved_at), 3),
        "final_checkpoint_step": saved_step, "old_gang_last_step": old_steps[-1][0],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lost = [r["work_lost_with_warning_seconds"] for r in runs]
    back = [r["warning_to_gang_running_seconds"] for r in runs]
    return {
        "nodes": NODES, "runs": len(runs),
        "interruptions": sum(r["interruptions"] for r in runs),
        "gang_checkpoints_committed": sum(r["gang_checkpoints_committed"] for r in runs),
        "gang_restores": sum(r["gang_restores"] for r in runs),
        "correct": all(r["correct"] for r in runs),
        "warning_to_gang_running_seconds": {"mean": round(statistics.mean(back), 3), "max": max(back)},
        "work_lost_with_warning_seconds": {"mean": round(statistics.mean(lost), 3), "max": max(lost)},
        "per_run": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: signal,dmtcp")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    root = Path(tempfile.mkdtemp(prefix="spotrun-bench-gang-"))
    os.chdir(root)
    runs: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    for method in methods:  # a runtime each: the traces' steady windows are about 400 ticks long
        options = RuntimeOptions(root=root / f"run-{method}", zones=("us-east-1c", "us-east-1f"))
        traces = load_traces(zones=options.zones)
        market = MarketReplay(traces, steady_window(traces, options.zones, 400), options.tick_seconds)
        runtime = LocalRuntime(market, options).start()
        try:
            for number in range(args.runs):
                runs[method].append({"method": method, **one_run(runtime, method)})
                print(json.dumps(runs[method][-1]), flush=True)
                wait_for(lambda rt=runtime: rt.cp.store.account_active() == 0, 60,
                         f"{method} run {number}'s instances to end")
        finally:
            runtime.stop()
    summary: dict[str, Any] = {method: summarize(method_runs) for method, method_runs in runs.items()}
    summary["setting"] = {
        "program": "spotrun_local.programs.ring", "steps": STEPS, "vector_size": SIZE,
        "seconds_per_step": SLEEP, "warning_seconds": RuntimeOptions(root=root).warning_seconds,
        "dmtcp": "4.2.0 with worker/image/dmtcp-gang.patch (one coordinator on rank 0, a DMTCP_TMPDIR per rank)",
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for method in methods:
        print(method, json.dumps({k: v for k, v in summary[method].items() if k != "per_run"}, indent=2))
    return 0 if all(summary[method]["correct"] for method in methods) else 1


if __name__ == "__main__":
    raise SystemExit(main())
