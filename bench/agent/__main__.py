"""The agent and the control plane on the local runtime: what an interruption costs.

    PYTHONPATH=lambdas:worker:local:cli:. .venv/bin/python -m bench.agent   (or: make bench-agent)

Measures, on real agent processes against moto's server with the replayed market:
- work lost per interruption with a warning (the final checkpoint fits the warning: goal 0 s), and
  for an agent killed with SIGKILL (goal: at most the checkpoint interval);
- warning -> replacement launched, in the control plane (goal under 1 s);
- warning -> the task running again on its replacement (restore included);
- checkpoint capture + upload throughput as a ratio to a plain copy of the same bytes to the same
  store (goal 0.8 or better);
- the default checkpointer, DMTCP, on a ~500 MB process: each checkpoint's time and image size, each
  restore's time, and the work lost over 3 warnings (bench/agent/dmtcp.py).
Writes bench/results/agent.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

from bench.agent.dmtcp import dmtcp_scenario, sample_stats  # noqa: E402
from spotrun.domain.model import JobState  # noqa: E402
from spotrun.jobs import submit_job  # noqa: E402
from spotrun_local import demo  # noqa: E402
from spotrun_local.market import MarketReplay, load_traces, pick_window  # noqa: E402
from spotrun_local.runtime import LocalRuntime, RuntimeOptions  # noqa: E402
from spotrun_worker import parts  # noqa: E402
from spotrun_worker.checkpointers import make_checkpointer  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "agent.json"
OVERLAP_KEYS = ("overlap_ratio", "goal_overlap_ratio_at_least_1_3", "restore_ratio", "restore_ratio_loopback_range_server",
                "goal_restore_ratio_at_least_1_0", "save_and_restore_1gib", "compression", "final_checkpoint_measured")
STATE_PROGRAM = '''
import os, signal, sys, time
from pathlib import Path
size = int(sys.argv[1])
wanted = {"now": False}
signal.signal(signal.SIGUSR1, lambda *_: wanted.update(now=True))  # before the slow allocation
state = os.urandom(size)
directory = Path(os.environ["SPOTRUN_CHECKPOINT_DIR"])
while True:
    if wanted["now"]:
        wanted["now"] = False
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "state.bin").write_bytes(state)
        (directory / ".complete").touch()
    time.sleep(0.01)
'''


def _at(event: Any) -> float:
    return event.at.timestamp()


def interruption_scenario(rounds_limit: int = 40_000_000, tasks: int = 4) -> dict[str, Any]:
    options = RuntimeOptions(root=Path(tempfile.mkdtemp(prefix="spotrun-bench-")))
    traces = load_traces(zones=options.zones)
    start = pick_window(traces, options.zones, ticks=int(90 / options.tick_seconds), min_losses=2)
    runtime = LocalRuntime(MarketReplay(traces, start, options.tick_seconds), options).start()
    try:
        spec = demo.job_spec(rounds_limit, tasks)
        del spec["combine"]
        job, _ = submit_job(runtime.cp, spec, "bench")
        store = runtime.cp.store
        deadline = time.monotonic() + 400
        killed: list[tuple[int, int, float]] = []
        while time.monotonic() < deadline:
            current = store.get_job(job.job_id)
            if current.state in (JobState.SUCCEEDED, JobState.FAILED):
                break
            # kill agents (no warning at all) some time after a committed checkpoint, mid-interval
            if len(killed) < 2:
                for index in range(tasks):
                    task = store.get_task(job.job_id, index)
                    since = (time.time() - task.checkpoint.committed_at.timestamp()) if task.checkpoint else 0
                    if (task.checkpoint and task.checkpoint.attempt == task.attempt and task.state == "RUNNING"
                            and task.instance_id in runtime.instances
                            and since >= 10 + 5 * len(killed) and all(k[0] != index for k in killed)):
                        runtime.kill_agent(task.instance_id)
                        killed.append((index, task.attempt, time.time()))
                        break
            time.sleep(0.5)
        events = store.timeline(job.job_id, 2000)
        warnings = [e for e in runtime.counters.events if e["kind"] == "warning"]
        final = store.get_job(job.job_id)
        unfinished = []
        for index in range(tasks):
            task = store.get_task(job.job_id, index)
            if task.state != "SUCCEEDED":
                instance = runtime.instances.get(task.instance_id or "")
                unfinished.append({
                    "task": index, "state": task.state, "attempt": task.attempt, "draining": task.draining_attempt,
                    "instance": task.instance_id, "instance_known": instance is not None,
                    "agent_exit": instance.process.poll() if instance and instance.process else None,
                    "last_heartbeat": str(task.last_heartbeat_at), "reason": task.reason,
                    "last_events": [(e.kind, e.attempt, str(e.at)) for e in events if e.index == index][-6:],
                })
    finally:
        runtime.stop()

    replace_latency, running_again, lost_warned = [], [], []
    per_warning = []
    for warning in warnings:
        worker = None
        for e in events:
            if e.kind == "TaskStarted" and e.detail.get("instance") == warning["instance"]:
                worker = (e.index, e.attempt)
        if worker is None:
            per_warning.append({"instance": warning["instance"], "note": "the instance had not started its task"})
            continue
        index, attempt = worker
        replaced = [e for e in events if e.index == index and e.attempt == attempt and e.kind == "TaskInterrupted"
                    and e.detail.get("replacement")]
        restarted = [e for e in events if e.index == index and e.attempt and e.attempt > attempt
                     and e.kind == "TaskStarted"]
        ended = [e for e in events if e.index == index and e.attempt == attempt and "unsaved_seconds" in e.detail]
        if replaced:
            replace_latency.append(_at(replaced[0]) - warning["at"])
        if restarted:
            running_again.append(_at(restarted[0]) - warning["at"])
        if ended:
            lost_warned.append(float(ended[0].detail["unsaved_seconds"]))
        per_warning.append({
            "instance": warning["instance"], "task": index, "attempt": attempt,
            "kinds": sorted({e.kind for e in events if e.index == index and e.attempt == attempt}),
            "replacement_launched": bool(replaced), "unsaved_seconds_reported": bool(ended),
        })
    lost_killed = []
    for index, attempt, at in killed:
        # progress since this attempt's last save point: its newest commit, or its (restored) start
        saved = [_at(e) for e in events if e.index == index and e.attempt == attempt and _at(e) <= at
                 and e.kind in ("CheckpointCommitted", "TaskStarted")]
        if saved:
            lost_killed.append(at - max(saved))
    interval = spec["checkpoint"]["interval"]
    return {
        "job_state": final.state, "unfinished_tasks": unfinished, "warnings": len(warnings),
        "agents_killed": len(killed),
        "checkpoint_interval_seconds": interval,
        "work_lost_with_warning_seconds": sample_stats(lost_warned),
        "per_warning": per_warning,
        "work_lost_after_sigkill_seconds": sample_stats(lost_killed),
        "warning_to_replacement_launched_seconds": sample_stats(replace_latency),
        "warning_to_running_again_seconds": sample_stats(running_again),
        "goals": {
            "lost_with_warning_is_zero": bool(lost_warned) and max(lost_warned) < 1.0,
            "lost_after_sigkill_within_interval": bool(lost_killed) and max(lost_killed) <= interval,
            "replacement_under_1s": bool(replace_latency) and statistics.median(replace_latency) < 1.0,
        },
        "time_scale": {"tick_seconds": options.tick_seconds, "warning_seconds": options.warning_seconds,
                       "note": "the two-minute warning is replayed as warning_seconds of wall time"},
    }


def throughput(size_mib: int = 256, repeats: int = 7) -> dict[str, Any]:
    """Checkpoint capture + parallel upload vs a plain single upload_file of the same bytes, to moto."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    s3.create_bucket(Bucket="bench")
    work = Path(tempfile.mkdtemp(prefix="spotrun-ckpt-"))
    program = work / "state.py"
    program.write_text(STATE_PROGRAM)
    checkpointer = make_checkpointer("signal")
    checkpointer.start([os.sys.executable, str(program), str(size_mib * 1024 * 1024)], dict(os.environ), work,
                       work / "log")
    time.sleep(1.0)
    spotrun_seconds, plain_seconds = [], []
    try:
        for n in range(repeats):
            into = work / f"out{n}"
            into.mkdir()
            began = time.perf_counter()
            files = checkpointer.checkpoint(into, timeout=120)
            parts.CheckpointUpload(s3, "bench", f"ckpt/{n}").finish(files, into)  # the agent's own upload
            spotrun_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            for path in files:
                s3.upload_file(str(path), "bench", f"plain/{n}/{path.name}")
            plain_seconds.append(time.perf_counter() - began)
    finally:
        checkpointer.stop()
        server.stop()
    spotrun, plain = statistics.median(spotrun_seconds), statistics.median(plain_seconds)
    return {
        "bytes": size_mib * 1024 * 1024, "repeats": repeats,
        "spotrun_capture_and_upload_seconds": round(spotrun, 3), "plain_upload_seconds": round(plain, 3),
        "spotrun_mib_per_second": round(size_mib / spotrun, 1), "plain_mib_per_second": round(size_mib / plain, 1),
        "ratio_to_plain_copy": round(plain / spotrun, 3), "goal_ratio_at_least_0_8": plain / spotrun >= 0.8,
        "note": "plain copy = boto3 upload_file of the same files with default settings; the spotrun side also "
                "includes asking the program for its state and snapshotting it (capture)",
    }


def main() -> int:
    started = time.monotonic()
    results = {
        "command": "make bench-agent", "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "throughput": throughput(),
        "interruptions": interruption_scenario(),
        "dmtcp": dmtcp_scenario(),
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # `make bench-overlap` (bench/agent/overlap.py) writes its own keys into the same file: kept.
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**{k: v for k, v in kept.items() if k in OVERLAP_KEYS}, **results}, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
