"""Tasks stored lazily: a big job's tasks get their items as the scheduler admits them.

The job item says which tasks have items: [0, materialized), plus `stored_ahead` tasks beyond it that
the user cancelled one by one before their turn. Every other task of the job is pending: it has no
item, is in the job's `pending_state` and is counted there in the job's counts. Each write below is
one transaction pinned on the job's (materialized, pending_state, stored_ahead), so a materialization,
a move of the pending tasks (suspend, resume, cancel) and a cancel ahead never interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import event_item, task_from, task_item
from spotrun.adapters.dynamo.keys import job_key, task_key
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.model import Job, Task, TaskState, TimelineEvent

# One transaction holds at most 100 writes: the job's update and this many task items.
MATERIALIZE_CHUNK = 99


class PendingTaskStore(Table):
    def materialize(self, job: Job, tasks: Sequence[dict[str, Any]], now: datetime) -> list[Task] | None:
        """Give the pending tasks [materialized, materialized + len(tasks)) their items (QUEUED), skipping
        those stored ahead; at most MATERIALIZE_CHUNK. Returns the tasks stored now, or None when the job
        moved on since it was read (nothing written; read it again)."""
        assert job.materialized is not None and 0 < len(tasks) <= MATERIALIZE_CHUNK
        first = job.materialized
        assert [t["index"] for t in tasks] == list(range(first, first + len(tasks)))
        ahead = {t.index for t in self._stored(job.job_id, [t["index"] for t in tasks])} if job.stored_ahead else set()
        fresh = [t for t in tasks if t["index"] not in ahead]
        expr = _pinned(job, TaskState.QUEUED)
        expr.set("materialized", first + len(tasks))
        if ahead:
            expr.add("stored_ahead", -len(ahead))
        writes: list[dict[str, Any]] = [{"Update": {"TableName": self.table, "Key": serialize(job_key(job.job_id)),
                                                    **expr.update()}}]
        items = [task_item(t, now) for t in fresh]
        writes += [{"Put": {"TableName": self.table, "Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}}
                   for item in items]
        if not self._transact(writes):
            return None
        return [task_from(item) for item in items]

    def move_pending(self, job: Job, to_state: TaskState, event: TimelineEvent, now: datetime) -> bool:
        """Move every pending task from the job's pending state to `to_state` (suspend, resume, cancel):
        one write of the job's counts, with its timeline event. False when the job moved on since it was read."""
        expr = _pinned(job, job.pending_state)
        expr.set("pending_state", to_state)
        expr.set("updated_at", now)
        expr.add_in_map("counts", job.pending_state, -job.pending)
        expr.add_in_map("counts", to_state, job.pending)
        return self._transact([
            {"Update": {"TableName": self.table, "Key": serialize(job_key(job.job_id)), **expr.update()}},
            {"Put": {"TableName": self.table, "Item": serialize(event_item(event))}},
        ])

    def cancel_ahead(self, job: Job, index: int, event: TimelineEvent, now: datetime) -> Task | None:
        """Cancel one pending task before its turn: its item is stored now, CANCELLED (the materialization
        skips it), and the job counts it there. None when the job moved on or the task has an item."""
        assert job.is_pending(index)
        expr = _pinned(job, job.pending_state, pin_materialized=False)
        expr.condition("{m} <= {index}", m="@materialized", index=index)
        expr.add("stored_ahead", 1)
        expr.set("updated_at", now)
        expr.add_in_map("counts", job.pending_state, -1)
        expr.add_in_map("counts", TaskState.CANCELLED, 1)
        item = task_item({"job_id": job.job_id, "index": index, "kind": "task", "state": TaskState.CANCELLED,
                          "reason": "cancelled by the user before it was admitted", "finished_at": now}, now)
        if not self._transact([
            {"Update": {"TableName": self.table, "Key": serialize(job_key(job.job_id)), **expr.update()}},
            {"Put": {"TableName": self.table, "Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self.table, "Item": serialize(event_item(event))}},
        ]):
            return None
        return task_from(item)

    def _stored(self, job_id: str, indexes: Sequence[int]) -> list[Task]:
        """The tasks among `indexes` that have items, read consistently (a cancel ahead just wrote one)."""
        return [task_from(i) for i in self._hydrate([task_key(job_id, n) for n in indexes], consistent=True)]


def _pinned(job: Job, pending_state: TaskState, pin_materialized: bool = True) -> Expression:
    """A job update that holds only while the job's lazy tasks stand as they were read."""
    expr = Expression()
    expr.condition("attribute_exists(pk)")
    if pin_materialized:
        expr.condition("{m} = {materialized}", m="@materialized", materialized=job.materialized)
    expr.condition("{p} = {state}", p="@pending_state", state=pending_state.value)
    expr.condition("{a} = {ahead}", a="@stored_ahead", ahead=job.stored_ahead)
    return expr
