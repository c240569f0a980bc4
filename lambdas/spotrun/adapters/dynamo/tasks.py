"""Tasks: read one, many, by state or page by page; the small guarded writes (heartbeat, desired
state, checkpoint pointer, early checkpoint request); and the live index the reaper sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import NotOurToken, decode_token, deserialize, encode_token, iso, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import MEASURED_FIELDS, task_from
from spotrun.adapters.dynamo.keys import TASK_SHARDS, by_job_pk, by_state_pk, live_pk, task_key
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.lifecycle import last_sign_of_life
from spotrun.domain.model import ACTIVE_STATES, Checkpoint, Desired, Task, TaskState


class TaskStore(Table):
    def get_task(self, job_id: str, index: int) -> Task | None:
        item = self._get(task_key(job_id, index))
        return task_from(item) if item else None

    def task_environment(self, job_id: str, index: int) -> dict[str, str]:
        item = self._get(task_key(job_id, index))
        return dict(item.get("env", {})) if item else {}

    def tasks_in_state(self, job_id: str, state: TaskState, limit: int) -> list[Task]:
        """Up to `limit` tasks of a job in one state, lowest index first within each shard."""
        found: list[Task] = []
        for shard in range(TASK_SHARDS):
            tasks = self._query_index("by_state", "state_pk", by_state_pk(job_id, state, shard), limit - len(found))
            found.extend(t for t in tasks if t.state == state)  # the item may have moved on since
            if len(found) >= limit:
                break
        return sorted(found, key=lambda t: t.index)

    def list_tasks(
        self, job_id: str, state: TaskState | None, limit: int, token: str | None
    ) -> tuple[list[Task], str | None]:
        shard, after = _tasks_cursor(token)
        index, key, sort_key = ("by_state", "state_pk", "state_sk") if state else ("by_job", "job_pk", "job_sk")
        tasks: list[Task] = []
        while shard < TASK_SHARDS and len(tasks) < limit:
            params: dict[str, Any] = {
                "TableName": self.table, "IndexName": index, "Limit": limit - len(tasks),
                "KeyConditionExpression": f"{key} = :p" + (f" AND {sort_key} > :a" if after else ""),
                "ExpressionAttributeValues": serialize({
                    ":p": by_state_pk(job_id, state, shard) if state else by_job_pk(job_id, shard),
                    **({":a": after} if after else {})}),
            }
            answer = self.client.query(**params)
            rows = [deserialize(i) for i in answer.get("Items", [])]
            tasks.extend(t for t in self._tasks_at(rows) if state is None or t.state == state)
            if answer.get("LastEvaluatedKey") and rows:
                after = rows[-1][sort_key]
            else:
                shard, after = shard + 1, None
        more = shard < TASK_SHARDS
        return tasks, encode_token({"shard": shard, "after": after}) if more else None

    def _query_index(self, index: str, key: str, value: str, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        answer = self.client.query(
            TableName=self.table, IndexName=index, Limit=limit, KeyConditionExpression=f"{key} = :p",
            ExpressionAttributeValues=serialize({":p": value}),
        )
        return self._tasks_at([deserialize(i) for i in answer.get("Items", [])])

    def _tasks_at(self, rows: Sequence[dict[str, Any]]) -> list[Task]:
        """The tasks an index query named. Indexes hold keys only, so a heartbeat rewrites none of
        them; the items are read from the table (eventually consistent, as the index itself is)."""
        return [task_from(item) for item in self._hydrate([{"pk": r["pk"], "sk": r["sk"]} for r in rows])]

    def tasks(self, refs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Task]:
        """Tasks by (job, index), 100 per request; missing ones are left out."""
        return {(t.job_id, t.index): t for t in (task_from(i) for i in self._hydrate([task_key(j, n) for j, n in refs]))}

    def record_heartbeat(self, job_id: str, index: int, attempt: int, at: datetime, fields: dict[str, Any]) -> bool:
        """Liveness and progress; ignores heartbeats of old attempts and ones older than the newest seen."""
        # Only attributes no index projects: one write unit for an item under 1 KB, no index writes.
        # (The reaper finds silent workers from the live index's transition time, then reads this.)
        expr = Expression()
        expr.set("last_heartbeat_at", at)
        for name, value in fields.items():
            expr.set(name, value)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        expr.condition("{s} = {running}", s="@state", running=TaskState.RUNNING.value)
        expr.condition("attribute_not_exists({h}) OR {h} < {at}", h="@last_heartbeat_at", at=iso(at))
        return self._update(task_key(job_id, index), expr)

    def set_task_desired(self, job_id: str, index: int, desired: Desired, states: Sequence[TaskState],
                         at: datetime) -> bool:
        expr = Expression()
        expr.set("desired", desired)
        expr.set("desired_at", at)
        expr.condition_in("state", [s.value for s in states])
        return self._update(task_key(job_id, index), expr)

    def commit_checkpoint(self, job_id: str, index: int, checkpoint: Checkpoint) -> bool:
        """Move the task's checkpoint pointer forward, only for the owning (or draining) attempt."""
        expr = Expression()
        measured = {name: getattr(checkpoint, name) for name in MEASURED_FIELDS if getattr(checkpoint, name) is not None}
        expr.set("checkpoint", {
            "seq": checkpoint.seq, "key": checkpoint.key, "attempt": checkpoint.attempt, "size_bytes": checkpoint.size_bytes,
            "committed_at": iso(checkpoint.committed_at), "method": checkpoint.method, **measured,
            **({"ranks": checkpoint.ranks} if checkpoint.ranks > 1 else {}),
        })
        expr.condition("{a} = {attempt} OR {d} = {attempt2}", a="@attempt", attempt=checkpoint.attempt,
                       d="@draining_attempt", attempt2=checkpoint.attempt)
        expr.condition("attribute_not_exists({c}) OR {cs} < {seq}", c="@checkpoint", cs="@checkpoint.seq", seq=checkpoint.seq)
        return self._update(task_key(job_id, index), expr)

    def request_checkpoint(self, job_id: str, index: int, attempt: int, at: datetime) -> bool:
        """Ask the running attempt for an early checkpoint (its agent compares the time with its last one)."""
        expr = Expression()
        expr.set("checkpoint_requested_at", at)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        return self._update(task_key(job_id, index), expr)

    def stale_live_tasks(self, before: datetime, limit: int) -> list[Task]:
        """Active tasks whose last sign of life (heartbeat, launch or start) is older than `before`.

        The live index is keyed by the time of the task's last move, which heartbeats do not touch
        (that would rewrite the index on every beat); every task silent since `before` is in the
        range, and the items read say which of them really are.
        """
        found: list[Task] = []
        for shard in range(TASK_SHARDS):
            params: dict[str, Any] = {
                "TableName": self.table, "IndexName": "live", "Limit": 100,
                "KeyConditionExpression": "live_pk = :p AND live_sk < :t",
                "ExpressionAttributeValues": serialize({":p": live_pk(shard), ":t": iso(before)}),
            }
            while len(found) < limit:
                answer = self.client.query(**params)
                rows = [deserialize(i) for i in answer.get("Items", [])]
                found.extend(t for t in self._tasks_at(rows)
                             if t.state in ACTIVE_STATES and (last_sign_of_life(t) or before) < before)
                if not answer.get("LastEvaluatedKey"):
                    break
                params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found[:limit]


def _tasks_cursor(token: str | None) -> tuple[int, str | None]:
    """The cursor of a task listing: the shard it is in and the last index sort key handed out there."""
    cursor = decode_token(token) or {"shard": 0, "after": None}
    shard, after = cursor.get("shard"), cursor.get("after")
    if set(cursor) != {"shard", "after"} or type(shard) is not int or not 0 <= shard < TASK_SHARDS:
        raise NotOurToken()
    if after is not None and not (isinstance(after, str) and len(after) == 6 and after.isascii() and after.isdigit()):
        raise NotOurToken()
    return shard, after
