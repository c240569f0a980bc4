"""The default checkpointer for real: DMTCP 4.2.0 checkpoints of a ~500 MB process through the local runtime.

One task, `checkpoint.method` left to its default (dmtcp) with a 30 s interval (the shortest a spec allows), runs a program that holds
500 MiB of numpy state and touches a slice of it every 0.1 s, printing `step N <unix time>`. The bench
interrupts the instance running it with a spot warning (`LocalRuntime.interrupt`, the market replay's
own path) 10 s after each attempt's program started stepping, WARNINGS times; each replacement restores
the final checkpoint on another instance. Measured from the run's own records:

- per checkpoint (periodic and final): `capture_seconds` (the coordinator's "starting checkpoint" to
  "Wrote restart script", from its log in the instance's work directory), `checkpoint_seconds`
  (starting checkpoint -> the commit in the timeline: capture, upload of every file, manifest, commit)
  and `image_mib` (the committed bytes);
- per restore: `download_seconds` (the attempt's `TaskStarted`, at its claim -> `CheckpointRestored`,
  written once every file is downloaded and verified) and `restore_seconds` (`CheckpointRestored` ->
  the restored program's first step, by its own clock: staging, coordinator, `dmtcp_restart`);
- per warning: `work_lost_with_warning_seconds`, by the program's own record: the steps it did again
  after the restore (its first step then against the last it printed before it was frozen) times its
  median step time. DMTCP lets the program run on between writing the image and the agent's freeze,
  so this is not zero; the agent's own report (`agent_reported_unsaved_seconds`, its time from the
  end of the capture call to the freeze) does not see that time.

The warning is time-scaled to 30 s of wall time here (12 s in the other scenario): the agent keeps a
10 s margin before the reclaim, and capturing 500 MB then uploading it to moto takes several seconds;
on AWS the warning is 120 s.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from spotrun.domain.model import JobState
from spotrun.jobs import submit_job
from spotrun_local.market import MarketReplay, load_traces, steady_window
from spotrun_local.runtime import LocalRuntime, RuntimeOptions

PROGRAM = '''
import sys, time
import numpy as np
size_mib, steps, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
state = np.random.default_rng(20261205).random(size_mib * 1024 * 1024 // 8)
chunk = len(state) // steps
for step in range(steps):
    state[step * chunk:(step + 1) * chunk] *= 1.5
    print(f"step {step} {time.time():.3f}", flush=True)
    time.sleep(pause)
open("result.txt", "w").write(repr(float(state.sum())) + "\\n")
'''
SIZE_MIB, STEPS, PAUSE = 500, 900, 0.1
MIB = 1024 * 1024
_COORDINATOR_LINE = re.compile(r"\[(\d{4}-\d\d-\d\dT[\d:.]+), [^\]]*\] at [^;]*; REASON='([^;']*)")
_STEP = re.compile(r"^step (\d+) ([\d.]+)$", re.MULTILINE)


def expected_result() -> str:
    """What the program writes when nothing interrupts it (the same operations, no pauses)."""
    import numpy as np

    state = np.random.default_rng(20261205).random(SIZE_MIB * MIB // 8)
    chunk = len(state) // STEPS
    for step in range(STEPS):
        state[step * chunk:(step + 1) * chunk] *= 1.5
    return repr(float(state.sum())) + "\n"


def coordinator_checkpoints(log: Path) -> list[tuple[float, float]]:
    """(started, written) unix times of each checkpoint a DMTCP coordinator log records, in order."""
    if not log.is_file():
        return []
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    started: float | None = None
    found = []
    for stamp, reason in _COORDINATOR_LINE.findall(text):
        at = datetime.fromisoformat(stamp).astimezone().timestamp()  # the coordinator logs local time
        if reason.startswith("starting checkpoint"):
            started = at
        elif reason.startswith("Checkpoint complete. Wrote restart script") and started is not None:
            found.append((started, at))
            started = None
    return found


def steps(log: Path) -> list[tuple[int, float]]:
    return [(int(n), float(t)) for n, t in _STEP.findall(log.read_text(errors="replace"))] if log.is_file() else []


def step_seconds(at: dict[int, float]) -> float:
    """The program's median time per step (the pauses DMTCP's captures add are outliers)."""
    ordered = sorted(at)
    return statistics.median(at[b] - at[a] for a, b in zip(ordered, ordered[1:], strict=False) if b == a + 1)


def dmtcp_scenario(warnings: int = 3, run_seconds: float = 10.0, interval: int = 30) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="spotrun-bench-dmtcp-"))
    program = root / "hold_state.py"
    program.write_text(PROGRAM)
    options = RuntimeOptions(root=root / "run", zones=("us-east-1c", "us-east-1f"), warning_seconds=30.0)
    traces = load_traces(zones=options.zones)
    market = MarketReplay(traces, steady_window(traces, options.zones, 300), options.tick_seconds)
    spec = {"name": "dmtcp-bench", "command": [sys.executable, str(program), str(SIZE_MIB), str(STEPS), str(PAUSE)],
            "outputs": ["result.txt"], "checkpoint": {"interval": interval},
            "retries": {"program": 0, "environment": 5}, "resources": {"vcpus": 2, "memory_gib": 2}}
    runtime = LocalRuntime(market, options).start()
    try:
        job, _ = submit_job(runtime.cp, spec, "bench")
        store = runtime.cp.store

        def attempt_log(attempt: int) -> Path | None:
            task = store.get_task(job.job_id, 0)
            if task.attempt != attempt or not task.instance_id:
                return None
            return (options.root / "instances" / task.instance_id / "work" / job.job_id / "0" / ".spotrun"
                    / f"attempt-{attempt}.log")

        deadline = time.monotonic() + 900
        for attempt in range(1, warnings + 1):
            while time.monotonic() < deadline:
                log = attempt_log(attempt)
                if log is not None and steps(log):
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"attempt {attempt} never ran its program")
            time.sleep(run_seconds)
            runtime.interrupt(store.get_task(job.job_id, 0).instance_id)
        while store.get_job(job.job_id).state not in (JobState.SUCCEEDED, JobState.FAILED):
            if time.monotonic() > deadline:
                raise RuntimeError("the job did not finish in 900 s")
            time.sleep(0.5)
        final = store.get_job(job.job_id)
        events = store.timeline(job.job_id, 2000)
        result = runtime.session.client("s3").get_object(
            Bucket=runtime.cp.settings.bucket, Key=f"jobs/{job.job_id}/outputs/0/result.txt")["Body"].read().decode()
    finally:
        runtime.stop()
    try:
        return _measure(job.job_id, events, final.state, result, options.root, warnings, interval, options)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # instance work directories hold GBs of images


def _measure(job_id: str, events: list[Any], state: str, result: str, run: Path, warnings: int, interval: int,
             options: RuntimeOptions) -> dict[str, Any]:
    started = {e.attempt: e for e in events if e.kind == "TaskStarted"}
    work = {a: run / "instances" / e.detail["instance"] / "work" / job_id / "0" for a, e in started.items()}
    checkpoints = []
    for attempt in sorted(started):
        commits = sorted((e for e in events if e.kind == "CheckpointCommitted" and e.attempt == attempt),
                         key=lambda e: e.at)
        captured = coordinator_checkpoints(work[attempt] / ".spotrun" / "dmtcp" / "coordinator.log")
        if len(captured) != len(commits):
            raise RuntimeError(f"attempt {attempt}: {len(captured)} captures but {len(commits)} commits")
        for (begun, written), commit in zip(captured, commits, strict=True):
            checkpoints.append({"attempt": attempt, "seq": commit.detail["seq"],
                                "final": attempt <= warnings and commit is commits[-1],
                                "capture_seconds": round(written - begun, 3),
                                "checkpoint_seconds": round(commit.at.timestamp() - begun, 3),
                                "image_mib": round(commit.detail["bytes"] / MIB, 1)})
    restores = []
    for event in (e for e in events if e.kind == "CheckpointRestored"):
        resumed = steps(work[event.attempt] / ".spotrun" / f"attempt-{event.attempt}.log")
        restores.append({"attempt": event.attempt, "seq": event.detail["seq"],
                         "download_seconds": round(event.at.timestamp() - started[event.attempt].at.timestamp(), 3),
                         "restore_seconds": round(resumed[0][1] - event.at.timestamp(), 3) if resumed else None})
    per_warning = []
    for attempt in range(1, warnings + 1):
        ended = [e for e in events if e.kind == "AttemptEnded" and e.attempt == attempt and "unsaved_seconds" in e.detail]
        before = dict(steps(work[attempt] / ".spotrun" / f"attempt-{attempt}.log"))
        after = steps(work[attempt + 1] / ".spotrun" / f"attempt-{attempt + 1}.log") if attempt + 1 in work else []
        last = max(before) if before else None
        saved = after[0][0] - 1 if after else None  # the last step the restored state had done
        per_warning.append({
            "attempt": attempt, "last_step_before": last, "first_step_after": after[0][0] if after else None,
            "steps_done_again": last - saved if last is not None and saved is not None else None,
            "lost_seconds": round((last - saved) * step_seconds(before), 3) if last is not None and saved is not None
            else None,
            "agent_reported_unsaved_seconds": float(ended[0].detail["unsaved_seconds"]) if ended else None,
        })
    lost = [w["lost_seconds"] for w in per_warning if w["lost_seconds"] is not None]
    reported = [w["agent_reported_unsaved_seconds"] for w in per_warning if w["agent_reported_unsaved_seconds"] is not None]
    return {
        "job_state": state, "result_matches_uninterrupted_run": result == expected_result(),
        "process_state_mib": SIZE_MIB, "checkpoint_interval_seconds": interval, "warnings": len(per_warning),
        "checkpoints": checkpoints, "checkpoint_seconds": sample_stats([c["checkpoint_seconds"] for c in checkpoints]),
        "capture_seconds": sample_stats([c["capture_seconds"] for c in checkpoints]),
        "image_mib": sample_stats([c["image_mib"] for c in checkpoints]),
        "restores": restores, "restore_seconds": sample_stats([r["restore_seconds"] for r in restores
                                                         if r["restore_seconds"] is not None]),
        "download_seconds": sample_stats([r["download_seconds"] for r in restores]),
        "work_lost_with_warning_seconds": sample_stats(lost), "agent_reported_unsaved_seconds": sample_stats(reported),
        "per_warning": per_warning,
        "time_scale": {"warning_seconds": options.warning_seconds,
                       "note": "the two-minute warning is replayed as warning_seconds of wall time"},
    }


def sample_stats(values: list[float]) -> dict[str, Any]:
    """A sample's size, median, extremes and values (sorted, rounded); both agent benchmarks report with it."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "median": round(statistics.median(ordered), 3), "max": round(ordered[-1], 3),
            "min": round(ordered[0], 3), "values": [round(v, 3) for v in ordered]}
