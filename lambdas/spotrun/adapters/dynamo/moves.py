"""Task moves: one guarded transaction per batch of `TaskChange`s, with everything a move carries.

A move writes the task (conditioned on the state and attempt it was decided on), its job's counts
and statistics (conditioned on the job's concurrency cap when it starts attempts), the account's
capacity count (conditioned on the account cap), the ended attempt's record and the new one's, the
pools' statistics and a timeline event: all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import iso, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import attempt_item, event_item
from spotrun.adapters.dynamo.keys import ACCOUNT_KEY, attempt_key, by_state_pk, job_key, live_pk, shard_of, task_key
from spotrun.adapters.dynamo.pools import pool_stats_item
from spotrun.adapters.dynamo.table import Table, chunks
from spotrun.domain.accounting import attempt_usage, pool_usage
from spotrun.domain.lifecycle import TaskChange, timeline_events
from spotrun.domain.model import ACTIVE_STATES, TERMINAL_STATES, Attempt, Market, Scope, TaskState


class TaskMoves(Table):
    def apply(self, change: TaskChange, now: datetime, event_detail: dict[str, Any] | None = None) -> bool:
        """Apply one guarded task change with its counts, capacity, attempt record and timeline event.

        Returns False when the task was no longer where `change` found it (nothing is written).
        """
        return self.apply_many([change], now, event_detail)

    def apply_many(
        self, changes: Sequence[TaskChange], now: datetime, event_detail: dict[str, Any] | None = None,
        job_conditions: dict[str, Any] | None = None,
    ) -> bool:
        if not changes:
            return True
        job_id = changes[0].task.job_id
        items: list[dict[str, Any]] = []
        count_deltas: dict[str, int] = {}
        active = 0
        pool_deltas: dict[str, dict[str, float]] = {}
        job_stats: dict[str, float] = {}
        for change in changes:
            items.append({"Update": {"TableName": self.table, "Key": serialize(task_key(job_id, change.task.index)),
                                     **self._task_update(change, now).update()}})
            count_deltas[change.from_state] = count_deltas.get(change.from_state, 0) - 1
            count_deltas[change.to_state] = count_deltas.get(change.to_state, 0) + 1
            active += change.active_delta
            if change.end_attempt is not None:
                items.append(self._end_attempt_item(change, now) if change.end_attempt.launched
                             else self._forget_attempt_item(change))
                end = change.end_attempt
                deltas = pool_deltas.setdefault(end.pool, {})
                for name, amount in pool_usage(end.executions, end.failures, int(end.interrupted),
                                               end.exec_seconds, change.task.nodes).items():
                    deltas[name] = deltas.get(name, 0) + amount
                if end.launched:
                    for name, amount in attempt_usage(end.pool, change.task.launched_at, change.task.price_per_hour,
                                                      now, end.executions, end.failures, int(end.interrupted),
                                                      end.exec_seconds, change.task.nodes).items():
                        job_stats[name] = job_stats.get(name, 0) + amount
            if change.new_attempt and change.set_fields.get("pool"):
                deltas = pool_deltas.setdefault(change.set_fields["pool"], {})
                deltas["running"] = deltas.get("running", 0) + change.task.nodes
                # The attempt's record is written with the move that starts it: a crash right after the
                # admission must not leave an attempt that has no record (its end could not be billed).
                items.append({"Put": {"TableName": self.table, "Item": serialize(attempt_item(Attempt(
                    job_id, change.task.index, change.task.attempt + 1, change.set_fields["pool"],
                    Market(change.set_fields.get("market") or Market.SPOT), launched_at=now,
                    price_per_hour=change.set_fields.get("price_per_hour"), nodes=change.task.nodes))),
                    "ConditionExpression": "attribute_not_exists(pk)"}})
            items.extend({"Put": {"TableName": self.table, "Item": serialize(event_item(event))}}
                         for event in timeline_events(change, now, event_detail))
        items.append(self._job_counts_item(job_id, count_deltas, active, now, job_conditions or {}, job_stats))
        if active:
            items.append(self._account_item(active, (job_conditions or {}).get("account_cap")))
        for pool, deltas in pool_deltas.items():
            if any(deltas.values()):
                items.append(pool_stats_item(self.table, pool, deltas))
        return all(self._transact(chunk) for chunk in chunks(items, 100))

    def _task_update(self, change: TaskChange, now: datetime) -> Expression:
        task = change.task
        expr = Expression()
        expr.condition("{s} = {from_state}", s="@state", from_state=task.state.value)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=task.attempt)
        # The attempt number is given back when a launch is refused, so the fencing token is the pair
        # (attempt, admissions): a move decided on a refused admission cannot land on the next one.
        if task.admissions:
            expr.condition("{n} = {admissions}", n="@admissions", admissions=task.admissions)
        else:
            expr.condition("attribute_not_exists({n}) OR {n} = {none}", n="@admissions", none=0)
        expr.set("state", change.to_state)
        expr.set("state_pk", by_state_pk(task.job_id, change.to_state, shard_of(task.index)))
        expr.set("updated_at", now)
        if change.reason:
            expr.set("reason", change.reason)
        elif "reason" not in change.set_fields:
            expr.remove("reason")  # a reason says why the task is where this move put it, never an older one
        if change.new_attempt:
            expr.set("attempt", task.attempt + 1)
            expr.set("admissions", task.admissions + 1)
            expr.set("launched_at", now)
            expr.remove("instance_id")
            expr.remove("gang_instances")
            for earlier in ("exit_code", "launch_token"):  # the attempt before's, not this one's
                if earlier not in change.set_fields:
                    expr.remove(earlier)
        if change.revert_attempt:
            expr.set("attempt", task.attempt - 1)
            expr.remove("instance_id")
            expr.remove("gang_instances")
        for name, value in change.set_fields.items():
            expr.set(name, value)
        for name in change.remove_fields:
            expr.remove(name)
        for name, amount in change.increments.items():
            expr.add(name, amount)
        if change.to_state in ACTIVE_STATES:
            expr.set("live_pk", live_pk(shard_of(task.index)))
            expr.set("live_sk", f"{iso(now)}#{task.job_id}#{task.index:06d}")
        else:
            expr.remove("live_pk")
            expr.remove("live_sk")
        if change.to_state in TERMINAL_STATES:
            expr.set("finished_at", now)
        if change.to_state == TaskState.RUNNING and change.from_state == TaskState.LAUNCHING:
            expr.set("started_at", now)
        if change.end_attempt and change.end_attempt.scope != Scope.ENVIRONMENT and change.end_attempt.launched:
            expr.set("consecutive_environment_failures", 0)
        return expr

    def _end_attempt_item(self, change: TaskChange, now: datetime) -> dict[str, Any]:
        end = change.end_attempt
        assert end is not None
        expr = Expression()
        expr.condition("attribute_not_exists({e})", e="@ended_at")
        expr.set("ended_at", now)
        expr.set("outcome", end.outcome)
        expr.set("scope", end.scope.value if end.scope else None)
        expr.set("exit_code", end.exit_code)
        expr.set("exec_seconds", end.exec_seconds)
        return {"Update": {"TableName": self.table, "Key": serialize(attempt_key(change.task.job_id, change.task.index, end.attempt)),
                           **expr.update()}}

    def _forget_attempt_item(self, change: TaskChange) -> dict[str, Any]:
        """A launch EC2 refused was no attempt: its record goes (the number is admitted again later)."""
        end = change.end_attempt
        assert end is not None
        return {"Delete": {"TableName": self.table, "Key": serialize(attempt_key(change.task.job_id, change.task.index,
                                                                                 end.attempt)),
                           "ConditionExpression": "attribute_not_exists(ended_at)"}}

    def _job_counts_item(
        self, job_id: str, deltas: dict[str, int], active: int, now: datetime, conditions: dict[str, Any],
        stats: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        expr = Expression()
        for key, amount in (stats or {}).items():
            if amount:
                expr.add_in_map("stats", key, amount)
        for state, amount in deltas.items():
            if amount:
                expr.add(f"counts.{state}", amount)
        if active:
            expr.add("active", active)
        expr.set("updated_at", now)
        expr.condition("attribute_exists(pk)")
        if "max_active" in conditions and active > 0:
            expr.condition("{a} <= {limit}", a="@active", limit=conditions["max_active"] - active)
        return {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **expr.update()}}

    def _account_item(self, active: int, cap: int | None) -> dict[str, Any]:
        expr = Expression()
        expr.add("active", active)
        if cap is not None and active > 0:
            expr.condition("attribute_not_exists({a}) OR {a} <= {limit}", a="@active", limit=cap - active)
        return {"Update": {"TableName": self.table, "Key": serialize(ACCOUNT_KEY), **expr.update()}}

    def account_active(self) -> int:
        item = self._get(ACCOUNT_KEY)
        return int(item.get("active", 0)) if item else 0
