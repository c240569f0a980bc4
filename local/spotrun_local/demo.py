"""`make run`: start the local runtime and run a sample problem through it, end to end.

The problem counts the primes below N in several tasks plus a combine step, with the cooperative
`signal` checkpointer, while the market replay (a window of the real traces where zones lose spot
capacity) interrupts running tasks. It prints the timeline and a summary, writes the summary as
JSON to $SPOTRUN_REPORT (default .spotrun/last-run.json), and exits 0 only if the combined result
equals an independent count (a sieve) and every task succeeded.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spotrun_local.market import MarketReplay, load_traces, pick_window
from spotrun_local.runtime import REPO, LocalRuntime, RuntimeOptions

PROGRAM = REPO / "local" / "spotrun_local" / "programs" / "primes.py"
DEMO_DIRECTORY = Path(".spotrun/demo")


def sieve_count(limit: int) -> int:
    """Primes below `limit`, by a plain sieve: an independent check of the distributed count."""
    flags = bytearray([1]) * limit
    flags[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(limit - 1) + 1):
        if flags[p]:
            flags[p * p::p] = bytearray(len(range(p * p, limit, p)))
    return sum(flags)


class Client:
    """A SigV4-signed HTTP client for the local API (the same signing the CLI uses against AWS)."""

    def __init__(self, url: str, access_key: str, secret_key: str):
        self.url = url.rstrip("/")
        self.credentials = Credentials(access_key, secret_key)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else None
        request = AWSRequest(method=method, url=f"{self.url}{path}", data=data,
                             headers={"Content-Type": "application/json"} if data else {})
        SigV4Auth(self.credentials, "execute-api", "us-east-1").add_auth(request)
        answer = requests.request(method, request.url, headers=dict(request.headers), data=data, timeout=30)
        return answer.status_code, answer.json()


def job_spec(limit: int, tasks: int) -> dict[str, Any]:
    return {
        "name": "primes-demo",
        "command": [sys.executable, str(PROGRAM), "count", str(limit)],
        "outputs": ["count.json"],
        "tasks": tasks,
        "combine": {"command": [sys.executable, str(PROGRAM), "combine"], "outputs": ["result.json"]},
        "checkpoint": {"method": "signal", "interval": 30},
        "retries": {"program": 0, "environment": 10},
        "max_concurrency": tasks,
        "resources": {"vcpus": 2, "memory_gib": 2},
    }


def run(limit: int = 40_000_000, tasks: int = 4, deadline_seconds: float = 280.0, *, start_tick: int | None = None,
        tick_seconds: float = 2.0, port: int = 0, directory: Path = DEMO_DIRECTORY, persist: bool = True) -> int:
    """Run the demo in a fresh `directory` (its state journaled there unless `persist` is off)."""
    started = time.monotonic()
    report_path = Path(os.environ.get("SPOTRUN_REPORT", ".spotrun/last-run.json"))
    shutil.rmtree(directory, ignore_errors=True)  # a demo starts empty: no job of an earlier demo comes back
    options = RuntimeOptions(root=directory, state=directory / "state" if persist else None, tick_seconds=tick_seconds)
    traces = load_traces(zones=options.zones)
    if start_tick is None:
        start_tick = pick_window(traces, options.zones, ticks=int(90 / options.tick_seconds), min_losses=2)
    market = MarketReplay(traces, start_tick, options.tick_seconds)
    runtime = LocalRuntime(market, options).start()
    from spotrun_local.gateway import new_local_credentials, start_gateway

    credentials = new_local_credentials()
    gateway = start_gateway(runtime.api_handler, credentials, port=port, console=runtime.console_handler)
    print(f"spotrun local: API {gateway.url}  (moto at {runtime.endpoint}; replaying traces from tick {start_tick})")
    print("  to use the CLI against it while the demo runs (only these local credentials are accepted):")
    print("\n".join(f"    {line}" for line in gateway.instructions().splitlines()))
    client = Client(gateway.url, credentials.access_key_id, credentials.secret_access_key)
    try:
        status, accepted = client.call("POST", "/jobs", job_spec(limit, tasks))
        if status != 202:
            print(f"submission refused: {status} {accepted}", file=sys.stderr)
            return 1
        job_id = accepted["job_id"]
        print(f"submitted {job_id}: count the primes below {limit:,} in {tasks} tasks + combine")
        job = _watch(client, job_id, started + deadline_seconds)
        expected = sieve_count(limit)
        summary = _summarize(runtime, client, job_id, job, expected, time.monotonic() - started)
        usage = resource.getrusage(resource.RUSAGE_SELF)  # this process: moto, handlers, pumps (not the agents)
        summary["runtime_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
        if runtime.journal is not None:
            summary["state_journal"] = {"records": runtime.journal.records_written,
                                        "bytes": runtime.journal.bytes_written,
                                        "compactions": runtime.journal.compactions}
    finally:
        gateway.stop()
        runtime.stop()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    print(f"summary written to {report_path}")
    return 0 if summary["correct"] else 1


def _watch(client: Client, job_id: str, deadline: float) -> dict[str, Any]:
    seen: set[tuple[str, str, Any, Any]] = set()
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, job = client.call("GET", f"/jobs/{job_id}")
        _, events = client.call("GET", f"/jobs/{job_id}/events?limit=1000")
        for event in events.get("events", []):
            key = (event["at"], event["kind"], event["task"], event["attempt"])
            if key in seen:
                continue
            seen.add(key)
            task = "" if event["task"] is None else f"task {event['task']}"
            attempt = "" if event["attempt"] is None else f"#{event['attempt']}"
            detail = {k: v for k, v in event["detail"].items() if k in ("reason", "pool", "seq", "exit_code")}
            print(f"  {event['at'][11:23]}  {event['kind']:<20} {task:<8}{attempt:<4} {json.dumps(detail) if detail else ''}")
        if job.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        time.sleep(1.0)
    print("the job did not finish in time", file=sys.stderr)
    return job


def _summarize(runtime: LocalRuntime, client: Client, job_id: str, job: dict[str, Any], expected: int,
               elapsed: float) -> dict[str, Any]:
    store = runtime.cp.store
    _, events = client.call("GET", f"/jobs/{job_id}/events?limit=1000")
    timeline = events.get("events", [])
    attempts = []  # launched attempts: a launch EC2 refused leaves no attempt record (LaunchRefused events)
    for index in range(job.get("tasks", 0) + (1 if job.get("combine") else 0)):
        attempts.extend(store.attempts(job_id, index))
    spot_cost = on_demand_cost = 0.0
    for attempt in attempts:
        if attempt.launched_at and attempt.ended_at:
            hours = (attempt.ended_at - attempt.launched_at).total_seconds() / 3600
            instance_type = attempt.pool.split("@")[0]
            spot_cost += hours * (attempt.price_per_hour or runtime.market.on_demand(instance_type))
            on_demand_cost += hours * runtime.market.on_demand(instance_type)
    result = _result(runtime, job_id, job)
    lost = _work_lost(timeline)
    _, stats = client.call("GET", f"/jobs/{job_id}/stats")
    return {
        "job_id": job_id, "state": job.get("state"), "elapsed_seconds": round(elapsed, 1),
        **summary_counts(stats, timeline),
        "market_warnings": runtime.counters.warnings, "market_reclaims": runtime.counters.reclaims,
        "work_lost_seconds": round(sum(lost), 1), "work_lost_per_interruption": [round(x, 1) for x in lost],
        "spot_cost_usd": round(spot_cost, 6), "on_demand_cost_usd": round(on_demand_cost, 6),
        "expected_primes": expected, "result": result,
        "correct": job.get("state") == "SUCCEEDED" and result is not None and result.get("primes") == expected,
    }


def summary_counts(stats: dict[str, Any], timeline: list[dict[str, Any]]) -> dict[str, int]:
    """The counts the summary shows, each one a user can find again: tasks (the combine step is one),
    attempts (launched ones: a refused launch is a LaunchRefused event, not an attempt) and interruptions
    from the job's statistics, which the timeline's events agree with one for one."""
    def events(kind: str) -> int:
        return sum(1 for e in timeline if e["kind"] == kind)

    total = stats["total"]
    return {
        "tasks": stats["tasks"]["total"], "attempts": total["executions"],
        "launches_refused_for_capacity": events("LaunchRefused"), "interruptions": total["interruptions"],
        "interruption_events": events("TaskInterrupted"), "checkpoints_committed": events("CheckpointCommitted"),
        "checkpoints_restored": events("CheckpointRestored"),
    }


def _result(runtime: LocalRuntime, job_id: str, job: dict[str, Any]) -> dict[str, Any] | None:
    s3 = runtime.session.client("s3")
    key = f"jobs/{job_id}/outputs/{job.get('tasks')}/result.json"
    try:
        return json.loads(s3.get_object(Bucket=runtime.cp.settings.bucket, Key=key)["Body"].read())
    except Exception:  # noqa: BLE001 - no result is reported as such
        return None


def _work_lost(timeline: list[dict[str, Any]]) -> list[float]:
    """Per interruption, the seconds of progress the ended attempt could not save.

    The agent measures it and reports it (`unsaved_seconds`); for an attempt that died without a
    report it is bounded by the time from its last committed checkpoint (or its start) to its loss.
    """
    def at(event: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(event["at"])

    losses = []
    for event in timeline:
        if event["kind"] != "TaskInterrupted":  # names the attempt that was interrupted, warned or not
            continue
        task, attempt = event["task"], event["attempt"]
        reported = [e["detail"]["unsaved_seconds"] for e in timeline
                    if e["task"] == task and e["attempt"] == attempt and "unsaved_seconds" in e["detail"]]
        if reported:
            losses.append(float(reported[0]))
            continue
        marks = [at(e) for e in timeline if e["task"] == task and e["attempt"] == attempt
                 and e["kind"] in ("CheckpointCommitted", "TaskStarted")]
        losses.append(max(0.0, (at(event) - max(marks)).total_seconds()) if marks else 0.0)
    return losses


def _print_summary(summary: dict[str, Any]) -> None:
    print("\nsummary")
    for key in ("state", "elapsed_seconds", "tasks", "attempts", "launches_refused_for_capacity", "interruptions",
                "checkpoints_committed", "checkpoints_restored", "work_lost_seconds", "spot_cost_usd",
                "on_demand_cost_usd", "expected_primes"):
        print(f"  {key:<30} {summary[key]}")
    print(f"  {'result':<30} {summary['result']}")
    print(f"  {'correct':<30} {summary['correct']}")
