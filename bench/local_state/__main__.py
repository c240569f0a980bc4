"""The local runtime's persistence: what journaling moto's state costs, and how long a restart takes.

    flock /tmp/spotrun-heavy.lock make bench-local      (PYTHONPATH=lambdas:worker:local:cli:. python -m bench.local_state)

1. `requests`: the writes spotrun makes most, against moto's server as the runtime builds it, with and
   without the journal (`spotrun_local.capture`): a task item's UpdateItem (a heartbeat's write), a
   two-item TransactWriteItems (a task move), a 1 MiB PutObject (a checkpoint file), an SQS message's
   trip (send, receive, delete). Median and p90 latency per operation.
2. `demo`: `make run` (`python -m spotrun_local`) with its journal and with `--ephemeral`, `--runs` each,
   alternating: wall time, CPU seconds of the runtime's process (moto, handlers, pumps; not the agents),
   journal records and bytes.
3. `restart`: a served deployment (`--serve --background`) with an empty state and with a filled one
   (items, objects, messages put in through moto's API), stopped and started again: seconds from the
   launch to its API answering, and the restore's own seconds (from its log).
Writes bench/results/local_state.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from spotrun_local.endpoint import REGION
from spotrun_local.persistence import StateJournal
from tests.local.support import provisioned_moto

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "local_state.json"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("lambdas", "worker", "local", "cli", "."))}


# ---------------------------------------------------------------------- 1. requests

def _timed(operation: Callable[[int], Any], count: int) -> dict[str, float]:
    samples = []
    for n in range(count):
        started = time.perf_counter()
        operation(n)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p90_ms": round(samples[int(0.9 * len(samples))], 3)}


def _timings(session: Any, env: dict[str, str], count: int, body: bytes) -> dict[str, Any]:
    dynamodb, s3, sqs = session.client("dynamodb"), session.client("s3"), session.client("sqs")
    table, bucket = env["SPOTRUN_TABLE"], env["SPOTRUN_BUCKET"]
    queue = json.loads(env["SPOTRUN_QUEUE_URLS"])["reports"]  # any queue: an SQS message's trip
    padding = {"S": "x" * 600}  # a task item is about 1 KB
    for n in range(50):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"JOB#{n}"}, "sk": {"S": "TASK#0"}, "pad": padding})

    def heartbeat(n: int) -> None:
        dynamodb.update_item(TableName=table, Key={"pk": {"S": f"JOB#{n % 50}"}, "sk": {"S": "TASK#0"}},
                             UpdateExpression="SET beat = :b", ExpressionAttributeValues={":b": {"N": str(n)}})

    def move(n: int) -> None:
        dynamodb.transact_write_items(TransactItems=[
            {"Update": {"TableName": table, "Key": {"pk": {"S": f"JOB#{n % 50}"}, "sk": {"S": "TASK#0"}},
                        "UpdateExpression": "SET st = :s", "ExpressionAttributeValues": {":s": {"S": str(n)}}}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": f"JOB#{n % 50}"}, "sk": {"S": f"EVENT#{n}"},
                                                  "pad": padding}}}])

    def checkpoint_file(n: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"checkpoints/j/{n % 4}/{n:08d}/files/state", Body=body)

    def message(n: int) -> None:
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"beat": n, "pad": "x" * 300}))
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1)
        for item in got.get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=item["ReceiptHandle"])

    return {
        "heartbeat_update_item": _timed(heartbeat, count), "task_move_transaction": _timed(move, count),
        "put_object_1mib": _timed(checkpoint_file, max(20, count // 5)),
        "sqs_send_receive_delete": _timed(message, count),
    }


def requests_cost(count: int) -> dict[str, Any]:
    body = os.urandom(1 << 20)
    results: dict[str, Any] = {}
    for variant in ("without journal", "with journal"):
        directory = Path(tempfile.mkdtemp(prefix="spotrun-bench-state-"))
        journal = StateJournal(directory) if variant == "with journal" else None
        try:
            with pytest.MonkeyPatch.context() as monkeypatch, provisioned_moto(monkeypatch, journal) as (session, env):
                results[variant] = _timings(session, env, count, body)
                if journal is not None:
                    results[variant]["journal"] = {"records": journal.records_written,
                                                   "bytes": journal.bytes_written, "compactions": journal.compactions}
        finally:
            if journal is not None:
                journal.close()
            shutil.rmtree(directory, ignore_errors=True)
    for name in results["without journal"]:
        if name != "journal":
            before, after = results["without journal"][name]["median_ms"], results["with journal"][name]["median_ms"]
            results.setdefault("added_median_ms", {})[name] = round(after - before, 3)
    return results


# ---------------------------------------------------------------------- 2. the demo

def demo_cost(runs: int) -> dict[str, Any]:
    variants: dict[str, list[dict[str, Any]]] = {"journal": [], "ephemeral": []}
    for _ in range(runs):
        for variant in variants:
            with tempfile.TemporaryDirectory(prefix="spotrun-bench-demo-") as work:
                report = Path(work) / "report.json"
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "spotrun_local", *(["--ephemeral"] * (variant == "ephemeral"))],
                                      cwd=work, env={**ENV, "SPOTRUN_REPORT": str(report)}, capture_output=True,
                                      text=True, timeout=900)
                elapsed = time.monotonic() - started
                summary = json.loads(report.read_text()) if report.exists() else {}
                if done.returncode != 0 or not summary.get("correct"):
                    raise RuntimeError(f"the demo ({variant}) failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
                variants[variant].append({"wall_seconds": round(elapsed, 1),
                                          "runtime_cpu_seconds": summary["runtime_cpu_seconds"],
                                          "interruptions": summary["interruptions"],
                                          "state_journal": summary.get("state_journal")})
    result: dict[str, Any] = {"runs": variants}
    for key in ("wall_seconds", "runtime_cpu_seconds"):
        result[f"median_{key}"] = {v: statistics.median(r[key] for r in rs) for v, rs in variants.items()}
    result["cpu_seconds_added"] = round(result["median_runtime_cpu_seconds"]["journal"]
                                        - result["median_runtime_cpu_seconds"]["ephemeral"], 2)
    return result


# ---------------------------------------------------------------------- 3. restart

def _serve(state: Path, *extra: str) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "spotrun_local", "--serve", "--background", "--state", str(state),
                           *extra], env=ENV, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"serve failed: {done.stdout} {done.stderr}")
    return time.monotonic() - started


def _stop(state: Path) -> None:
    subprocess.run([sys.executable, "-m", "spotrun_local", "--stop", "--state", str(state)], env=ENV,
                   capture_output=True, text=True, timeout=120, check=True)


def _restore_line(state: Path) -> dict[str, Any]:
    last = (state / "serve.log").read_text().rsplit("make serve", 1)[1]
    match = re.search(r"restored (\d+) items, (\d+) objects \(([\d.]+) MB\), (\d+) messages in ([\d.]+)s; "
                      r"ready in ([\d.]+)s", last)
    if not match:
        return {"ready_seconds": float(re.search(r"ready in ([\d.]+)s", last).group(1))}  # type: ignore[union-attr]
    items, objects, megabytes, messages, restore, ready = match.groups()
    return {"items": int(items), "objects": int(objects), "object_mb": float(megabytes), "messages": int(messages),
            "restore_seconds": float(restore), "ready_seconds": float(ready)}


def fill(state: Path, items: int, objects: int, object_bytes: int, messages: int) -> None:
    """Put state into a running deployment's moto: task-sized items, object bodies, queued messages."""
    deployment = json.loads((state / "deployment.json").read_text())
    endpoint = f"http://127.0.0.1:{deployment['moto_port']}"
    session = boto3.session.Session(region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local")
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    for start in range(0, items, 25):
        dynamodb.batch_write_item(RequestItems={"spotrun-state": [
            {"PutRequest": {"Item": {"pk": {"S": f"BENCH#{n // 100}"}, "sk": {"S": f"TASK#{n:08d}"},
                                     "state": {"S": "SUCCEEDED"}, "pad": {"S": "x" * 700}}}}
            for n in range(start, min(items, start + 25))]})
    s3 = session.client("s3", endpoint_url=endpoint)
    body = os.urandom(object_bytes)
    for n in range(objects):
        s3.put_object(Bucket="spotrun-data-us-east-1", Key=f"bench/{n:06d}", Body=body)
    sqs = session.client("sqs", endpoint_url=endpoint)
    queue = sqs.get_queue_url(QueueName="spotrun-reports-dlq")["QueueUrl"]  # a queue nothing consumes
    for start in range(0, messages, 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(n), "MessageBody": json.dumps({"n": n, "pad": "x" * 500})}
                                                        for n in range(start, min(messages, start + 10))])


def restart_time(rounds: int, items: int, objects: int, object_bytes: int, messages: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label, filled in (("empty", False), ("filled", True)):
        state = Path(tempfile.mkdtemp(prefix="spotrun-bench-serve-")) / ".spotrun"
        try:
            first = _serve(state)
            if filled:
                fill(state, items, objects, object_bytes, messages)
            _stop(state)
            samples = []
            for _ in range(rounds):
                seconds = _serve(state)
                samples.append({"launch_to_answer_seconds": round(seconds, 2), **_restore_line(state)})
                _stop(state)
            result[label] = {"first_start_seconds": round(first, 2), "restarts": samples,
                             "median_launch_to_answer_seconds": statistics.median(s["launch_to_answer_seconds"] for s in samples),
                             "journal_bytes": (state / "state" / "journal.jsonl").stat().st_size,
                             "blob_bytes": sum(p.stat().st_size for p in (state / "state" / "blobs").iterdir())}
        finally:
            subprocess.run([sys.executable, "-m", "spotrun_local", "--stop", "--state", str(state)], env=ENV,
                           capture_output=True, timeout=120)
            shutil.rmtree(state.parent, ignore_errors=True)
    result["size"] = {"items": items, "objects": objects, "object_bytes": object_bytes, "messages": messages}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per operation (default 300)")
    parser.add_argument("--runs", type=int, default=2, help="demo runs per variant (default 2)")
    parser.add_argument("--restarts", type=int, default=3, help="restarts per state (default 3)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--object-bytes", type=int, default=1 << 20)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo runs (minutes each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "flock /tmp/spotrun-heavy.lock make bench-local",
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "requests": requests_cost(args.requests),
        "restart": restart_time(args.restarts, args.items, args.objects, args.object_bytes, args.messages),
    }
    if not args.skip_demo:
        results["demo"] = demo_cost(args.runs)
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
