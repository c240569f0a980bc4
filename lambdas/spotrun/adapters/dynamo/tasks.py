"""Tasks: read one, many, by state or page by page; the small guarded writes (the agent's beat, desired
state, checkpoint pointer, early checkpoint request); and the live index the reaper sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from spotrun.access import BEAT
from spotrun.adapters.dynamo.codec import NotOurToken, decode_token, deserialize, encode_token, iso, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import MEASURED_FIELDS, task_from
from spotrun.adapters.dynamo.keys import TASK_SHARDS, by_job_pk, by_state_pk, live_pk, task_key
from spotrun.adapters.dynamo.table import Table, is_conflict
from spotrun.domain.lifecycle import last_sign_of_life
from spotrun.domain.messages import FLOAT_DECIMALS
from spotrun.domain.model import ACTIVE_STATES, Checkpoint, Desired, Task, TaskState


class TaskStore(Table):
    def get_task(self, job_id: str, index: int, consistent: bool = True) -> Task | None:
        """`consistent=False`: an eventually consistent read, at half the price (the agent's periodic look at its
        desired state, which may trail a write by a moment)."""
        item = self._get(task_key(job_id, index), consistent)
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

    def record_beat(self, job_id: str, index: int, attempt: int, at: datetime, progress: float | None = None) -> bool:
        """The agent's own liveness write, made with its task session (`spotrun.access`, WriteOwnBeat): one
        conditional UpdateItem of one attribute, `beat` = {attempt, at, progress}. False when refused (a
        newer attempt has beaten, or the task item is gone).

        It names no attribute but `beat` and the key (`pk`), so the policy can confine a session to them,
        whether or not IAM counts a ConditionExpression's attributes in dynamodb:Attributes; the fencing
        the old heartbeat function did (`attempt`, `state`) moves to the readers (`items.beat_of`): a beat
        counts only for the attempt it names, once that attempt has claimed its task. The condition only keeps an
        older attempt from overwriting a newer one's beat, and a beat from creating an item. No index
        projects `beat`: one write unit while the item stays under 1 KB (bench/scale measures it).
        The expression is written out (no ExpressionAttributeNames) so that the request carries no other
        name at all; none of its words is reserved in DynamoDB."""
        beat: dict[str, Any] = {"attempt": attempt, "at": iso(at)}
        if progress is not None:  # read from the user's file: kept to what DynamoDB stores (1e-200 is 0)
            beat["progress"] = round(min(1.0, max(0.0, float(progress))), FLOAT_DECIMALS) + 0.0
        try:
            self.client.update_item(
                TableName=self.table, Key=serialize(task_key(job_id, index)),
                UpdateExpression=f"SET {BEAT} = :b",
                ConditionExpression=f"attribute_exists(pk) AND (attribute_not_exists({BEAT}) OR {BEAT}.attempt <= :a)",
                ExpressionAttributeValues=serialize({":b": beat, ":a": attempt}), ReturnValues="NONE")
        except ClientError as error:
            if is_conflict(error):
                return False
            raise
        return True

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
