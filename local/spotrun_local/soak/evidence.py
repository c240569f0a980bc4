"""What the soak reads once the run is over: each problem's job, tasks, timeline, raw attempt records and
outputs (from the table and the bucket), the programs' and agents' logs, and the dead-letter queues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spotrun_local.soak.checks import Evidence, explain_dead_letter
from spotrun_local.soak.problems import Problem


class Reader:
    """Reads the table and the bucket directly (not through a control plane: chaos may have dropped it)."""

    def __init__(self, runtime: Any):
        from spotrun.adapters.dynamo import DynamoStore

        self.store = DynamoStore(runtime.session.client("dynamodb"), runtime.env["SPOTRUN_TABLE"])
        self.s3 = runtime.session.client("s3")
        self.bucket = runtime.env["SPOTRUN_BUCKET"]

    def evidence(self, problem: Problem) -> Evidence:
        job_id = problem.job_id or ""
        indexes = range(problem.tasks + 1)
        outputs = {index: self.read_json(f"jobs/{job_id}/outputs/{index}/result.json") for index in range(problem.tasks)}
        outputs[problem.tasks] = self.read_json(f"jobs/{job_id}/outputs/{problem.tasks}/combined.json")
        return Evidence(
            problem=problem, job=self.store.get_job(job_id),
            tasks={t.index: t for t in self.store.list_tasks(job_id, None, 1000, None)[0]},
            events=self.store.timeline(job_id, 100_000),
            attempt_records={index: self.attempt_items(job_id, index) for index in indexes},
            outputs=outputs, account_active=self.store.account_active())

    def unwarned_reclaims(self, runtime: Any) -> list[dict[str, Any]]:
        """The spot reclaims that came without a warning, each with the attempt its instance served then."""
        found = []
        for event in runtime.counters.events:
            if event["kind"] != "reclaim_without_warning":
                continue
            worker = self.store.worker(event["instance"])
            found.append({"instance": event["instance"], "at": event["at"],
                          "job_id": worker.job_id if worker else None, "index": worker.index if worker else None,
                          "attempt": worker.attempt if worker else None})
        return found

    def attempt_items(self, job_id: str, index: int) -> list[dict[str, Any]]:
        """The task's attempt records, read raw (the soak must see records the store's reader would reject)."""
        from spotrun.adapters.dynamo import deserialize, serialize, task_pk

        answer = self.store.client.query(
            TableName=self.store.table, KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues=serialize({":p": task_pk(job_id, index), ":a": "ATTEMPT#"}))
        return [deserialize(item) for item in answer.get("Items", [])]

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            return found
        except Exception:  # noqa: BLE001 - missing is reported by the checks
            return None


def program_corruption(root: Path) -> list[str]:
    """Lines in which a program (on any instance under `root`) reported a corrupt state."""
    found = []
    for path in (root / "instances").glob("*/work/*/*/.spotrun/attempt-*.log"):
        try:
            for line in path.read_text(errors="replace").splitlines():
                if "CORRUPT" in line:
                    found.append(f"{path.relative_to(root)}: {line.strip()}")
        except OSError:
            continue
    return found


def agent_failures(root: Path) -> dict[str, int]:
    """Why agents gave up attempts on their own (`agent failure: ...` lines), by first words."""
    counts: dict[str, int] = {}
    for path in (root / "instances").glob("*/agent.log"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines = text.splitlines()
        for n, line in enumerate(lines):
            if any(what in line for what in ("agent failure", "final checkpoint failed", "claim refused",
                                              "was not committed", "did not hand over")):
                key = line.split(" ", 3)[-1][:90]
                if "Traceback" in (lines[n + 1] if n + 1 < len(lines) else ""):  # name the exception
                    error = next((x for x in lines[n + 2:] if x and not x[0].isspace()), "")
                    key += f": {error[:160]}"
                counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:15])


def dead_letters(runtime: Any, receipts: Any) -> list[dict[str, Any]]:
    """Every message of every dead-letter queue, with its receive history (chaos `Receipts`) and whether
    that history explains it."""
    letters = []
    for queue, url in json.loads(runtime.env["SPOTRUN_DLQ_URLS"]).items():
        seen: set[str] = set()
        while True:
            messages = runtime.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300,
                                                   WaitTimeSeconds=0).get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                history = _history_of(message, receipts)
                letters.append({"queue": queue, "message_id": message["MessageId"], "body": message["Body"][:600],
                                "receives": history, "explained": explain_dead_letter(history)})
    return letters


def _history_of(message: dict[str, Any], receipts: Any) -> list[str]:
    history = receipts.history.get(message["MessageId"])
    if history is None:  # matched by body when the dead-letter queue gave it a new id
        for mid, body in receipts.bodies.items():
            if body == message["Body"]:
                history = receipts.history[mid]
                break
    return [h for h in (history or []) if h != "received"]


def uninjected_failures(receipts: Any) -> int:
    """Handler failures at receives that met no injected fault."""
    return sum(1 for history in receipts.history.values() for what in history if what == "failed")
