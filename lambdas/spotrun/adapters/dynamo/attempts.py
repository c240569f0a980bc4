"""Attempts and workers: the attempt records, which instance serves which attempt, and the end of
an attempt that no longer owns its task (billed once, with the drain of an interrupted one)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import deserialize, parse_time, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import attempt_from, worker_from, worker_item
from spotrun.adapters.dynamo.keys import attempt_key, job_key, task_key, task_pk, worker_key
from spotrun.adapters.dynamo.pools import pool_stats_item
from spotrun.adapters.dynamo.table import BATCH_WRITE_THREADS, Table
from spotrun.domain.accounting import STAT_SEPARATOR, attempt_usage, drain_usage, pool_usage
from spotrun.domain.model import Attempt, Scope, Worker


class AttemptStore(Table):
    def attempts(self, job_id: str, index: int) -> list[Attempt]:
        answer = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues=serialize({":p": task_pk(job_id, index), ":a": "ATTEMPT#"}),
        )
        # An attempt record has its number; an item holding only a key and a beat is not one (a task session
        # may create such items in its own partition: spotrun.access, WriteOwnBeat).
        return [attempt_from(item) for item in map(deserialize, answer.get("Items", [])) if "number" in item]

    def bind_instances(self, bindings: Sequence[tuple[str, int, int, str]], pool: str, now: datetime) -> None:
        """Record which instance serves which attempt (job, index, attempt, instance) after one launch
        call: the worker items in batches, the guarded task and attempt updates side by side."""
        self.batch_put(worker_item(instance_id, job_id, index, attempt, pool, now)
                       for job_id, index, attempt, instance_id in bindings)
        if len(bindings) == 1:
            self._bind(*bindings[0])
            return
        with ThreadPoolExecutor(min(BATCH_WRITE_THREADS, len(bindings))) as pool_:
            list(pool_.map(lambda binding: self._bind(*binding), bindings))

    def bind_gang(self, job_id: str, index: int, attempt: int, instance_ids: Sequence[str], pool: str,
                  now: datetime) -> bool:
        """Record the instances of a gang attempt, by rank: a worker item each (with its rank), and the task's
        and the attempt's `gang_instances` (rank 0's is the task's `instance_id`)."""
        self.batch_put(worker_item(instance_id, job_id, index, attempt, pool, now, rank)
                       for rank, instance_id in enumerate(instance_ids))
        attempt_expr = Expression()
        attempt_expr.set("instance_id", instance_ids[0])
        attempt_expr.set("gang_instances", list(instance_ids))
        self._update(attempt_key(job_id, index, attempt), attempt_expr)
        expr = Expression()
        expr.set("instance_id", instance_ids[0])
        expr.set("gang_instances", list(instance_ids))
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        return self._update(task_key(job_id, index), expr)

    def bind_instance(self, job_id: str, index: int, attempt: int, instance_id: str, pool: str, now: datetime) -> bool:
        """Record which instance serves an attempt (after the launch call answered)."""
        self._put(worker_item(instance_id, job_id, index, attempt, pool, now))
        return self._bind(job_id, index, attempt, instance_id)

    def _bind(self, job_id: str, index: int, attempt: int, instance_id: str) -> bool:
        expr = Expression()
        expr.set("instance_id", instance_id)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        attempt_expr = Expression()
        attempt_expr.set("instance_id", instance_id)
        self._update(attempt_key(job_id, index, attempt), attempt_expr)
        return self._update(task_key(job_id, index), expr)

    def record_attempt_end(
        self, job_id: str, index: int, attempt: int, outcome: str, scope: Scope | None, exec_seconds: float, now: datetime
    ) -> bool:
        """End an attempt that no longer owns its task (no task move); once only, with its pool statistics."""
        recorded = self._get(attempt_key(job_id, index, attempt))
        if recorded is None:
            return False
        pool = recorded["pool"]
        if recorded.get("ended_at"):
            return self._bill_drain(job_id, index, attempt, recorded, exec_seconds, now)
        expr = Expression()
        expr.condition("attribute_not_exists({e})", e="@ended_at")
        expr.set("ended_at", now)
        expr.set("outcome", outcome)
        expr.set("scope", scope.value if scope else None)
        expr.set("exec_seconds", exec_seconds)
        interruptions = int(outcome == "interrupted")
        nodes = int(recorded.get("nodes", 1))
        usage = Expression()
        for key, amount in attempt_usage(pool, parse_time(recorded.get("launched_at")), recorded.get("price_per_hour"),
                                         now, 1, 0, interruptions, exec_seconds, nodes).items():
            if amount:
                usage.add_in_map("stats", key, amount)
        usage.condition("attribute_exists(pk)")
        return self._transact([
                {"Update": {"TableName": self.table, "Key": serialize(attempt_key(job_id, index, attempt)), **expr.update()}},
                pool_stats_item(self.table, pool, pool_usage(1, 0, interruptions, exec_seconds, nodes)),
                {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **usage.update()}},
            ])

    def _bill_drain(self, job_id: str, index: int, attempt: int, recorded: dict[str, Any], exec_seconds: float,
                    now: datetime) -> bool:
        """An interrupted attempt ended (for its task) at the replacement, but its instance ran on until
        its final report: add that time to the job's instance seconds and cost, and the program's run the
        report measured beyond what was counted at the replacement to its execution seconds, once."""
        ended_at = parse_time(recorded["ended_at"])
        assert ended_at is not None
        pool = recorded["pool"]
        more = round(max(0.0, exec_seconds - float(recorded.get("exec_seconds") or 0.0)), 3)
        mark = Expression()
        mark.condition("attribute_not_exists({d})", d="@drained_until")
        mark.set("drained_until", now)
        if more:
            mark.add("exec_seconds", more)
        usage = Expression()
        for key, amount in drain_usage(pool, ended_at, recorded.get("price_per_hour"), now,
                                       int(recorded.get("nodes", 1))).items():
            usage.add_in_map("stats", key, amount)
        if more:
            usage.add_in_map("stats", f"{pool}{STAT_SEPARATOR}exec_seconds", more)
        items = [
            {"Update": {"TableName": self.table, "Key": serialize(attempt_key(job_id, index, attempt)), **mark.update()}},
            {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **usage.update()}},
        ]
        if more:
            items.append(pool_stats_item(self.table, pool, {"exec_seconds": more}))
        return self._transact(items)

    def record_restore(self, job_id: str, index: int, attempt: int, seq: int, from_attempt: int) -> None:
        """Note on the attempt which checkpoint it started from (the console's attempt history)."""
        expr = Expression()
        expr.set("restored_seq", seq)
        expr.set("restored_from", from_attempt)
        expr.condition("attribute_exists(pk)")
        self._update(attempt_key(job_id, index, attempt), expr)

    def worker(self, instance_id: str) -> Worker | None:
        item = self._get(worker_key(instance_id))
        return worker_from(item) if item else None

    def workers(self, instance_ids: Sequence[str]) -> dict[str, Worker]:
        """Worker records of many instances at once (100 per request)."""
        return {item["instance_id"]: worker_from(item) for item in self._hydrate([worker_key(i) for i in instance_ids])}
