"""Sweeps of any size: a job's tasks stored lazily, as the scheduler admits them.

A job of up to EAGER_TASKS tasks (and every job given `parameters`) is stored whole at submit. A
bigger sweep by count stores its first EAGER_TASKS tasks; the others are *pending*: no item, all in
the job's `pending_state` (QUEUED, SUSPENDED or CANCELLED) and counted there in the job's counts, so
the job's views, statistics and state are right without them. The readers of tasks go through here:
the scheduler and instance reuse store the next pending tasks when the stored queued ones run out
(`materialize`), suspend / resume / cancel move all pending tasks with one write (`move_pending`), a
pending task cancelled one by one gets its item at once, CANCELLED (`cancel_one`), and a task's view
and the task listing show a pending task as it stands (`task`, `list_tasks`). See docs/decisions.md,
"Sweeps of any size".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from spotrun.control import ControlPlane
from spotrun.domain.model import Job, Task, TaskState, TimelineEvent

# Tasks stored with the job at submit; a sweep's submit costs the same beyond it, whatever its size.
EAGER_TASKS = 1_000
# A transaction stores at most this many tasks (with the job's update: DynamoDB's 100 writes).
MATERIALIZE_CHUNK = 99
# Re-reads of the job when another writer moved its pending tasks first.
CONFLICT_RETRIES = 5
# A page of the listing's second part reads at most this many batches of 100 tasks (a page of the pending
# state whose tasks were mostly stored and moved on since may come back short, with a token for more).
MAX_READS_PER_PAGE = 10

PENDING_EVENTS = {TaskState.CANCELLED: "PendingTasksCancelled", TaskState.SUSPENDED: "PendingTasksSuspended",
                  TaskState.QUEUED: "PendingTasksResumed"}


def new_task(job_id: str, index: int, env: dict[str, str] | None = None, nodes: int = 1) -> dict[str, Any]:
    """A task's item as submit (or its admission) first stores it (a gang's says how many instances)."""
    return {"job_id": job_id, "index": index, "kind": "task", "state": TaskState.QUEUED, "env": env,
            **({"nodes": nodes} if nodes > 1 else {})}


def stored_at_submit(count: int, by_count: bool) -> int | None:
    """How many of a new job's tasks submit stores (None: all of them, as before lazy tasks)."""
    return EAGER_TASKS if by_count and count > EAGER_TASKS else None


def materialize(cp: ControlPlane, job: Job, wanted: int) -> list[Task]:
    """Store up to `wanted` of the job's next pending tasks (QUEUED) and return them, for admission."""
    stored: list[Task] = []
    conflicts = 0
    while len(stored) < wanted and job.pending > 0 and job.pending_state == TaskState.QUEUED:
        assert job.materialized is not None
        first = job.materialized
        n = min(MATERIALIZE_CHUNK, wanted - len(stored), job.task_count - first)
        got = cp.store.materialize(job, [new_task(job.job_id, i, None, int(job.spec.get("nodes", 1))) for i in range(first, first + n)], cp.clock())
        if got is None:  # another scheduler run (or a cancel) moved first: read the job again
            conflicts += 1
            fresh = cp.store.get_job(job.job_id)
            if fresh is None or conflicts > CONFLICT_RETRIES:
                break
            job = fresh
            continue
        stored.extend(got)
        job = dataclasses.replace(job, materialized=first + n, stored_ahead=job.stored_ahead - (n - len(got)))
    return stored


def move_pending(cp: ControlPlane, job: Job, sources: tuple[TaskState, ...], to_state: TaskState) -> int:
    """Move the job's pending tasks from one of `sources` to `to_state`; how many moved (0: none pending)."""
    for _ in range(CONFLICT_RETRIES):
        if job.pending <= 0 or job.pending_state not in sources or job.pending_state == to_state:
            return 0
        now = cp.clock()
        assert job.materialized is not None
        event = TimelineEvent(job.job_id, now, PENDING_EVENTS[to_state],
                              f"pending-{job.pending_state.lower()}-{to_state.lower()}-{now.timestamp()}", None, None,
                              {"from": job.pending_state.value, "to": to_state.value, "tasks": job.pending,
                               "first_index": job.materialized})
        if cp.store.move_pending(job, to_state, event, now):
            return job.pending
        fresh = cp.store.get_job(job.job_id)
        if fresh is None:
            return 0
        job = fresh
    return 0


def cancel_one(cp: ControlPlane, job: Job, index: int) -> Task | None:
    """Cancel a pending task the user named: its item is stored now, CANCELLED. None when it has an item
    by now (the caller cancels it as a stored task)."""
    for _ in range(CONFLICT_RETRIES):
        if not job.is_pending(index):
            return None
        now = cp.clock()
        event = TimelineEvent(job.job_id, now, "TaskCancelled", f"{index}-pending-TaskCancelled", index, None,
                              {"from": job.pending_state.value, "to": TaskState.CANCELLED.value,
                               "reason": "cancelled by the user before it was admitted"})
        task = cp.store.cancel_ahead(job, index, event, now)
        if task is not None:
            return task
        fresh = cp.store.get_job(job.job_id)
        if fresh is None:
            return None
        job = fresh
    return None


def task(cp: ControlPlane, job: Job, index: int) -> Task | None:
    """Task `index` of the job: its item, or as it stands while pending; None if the job has no such task."""
    return cp.store.get_task(job.job_id, index) or job.pending_task(index)


def list_tasks(cp: ControlPlane, job: Job, state: TaskState | None, limit: int,
               cursor: str | None) -> tuple[list[Task], str | None]:
    """A page of the job's tasks (in one state, or all), each once however the job moves meanwhile.

    Stored tasks come first, from the indexes (shard by shard), up to the boundary `b`: the job's
    `materialized` when the listing began. Then the tasks from `b` on in index order, each its item if
    it has one by now, else as it stands pending. A listing in another state than the pending one needs
    no second part: the pending tasks are not in it, and any task stored since is in the index.
    """
    if job.materialized is None and cursor is None:
        return cp.store.list_tasks(job.job_id, state, limit, None)
    position = _decode(cursor)
    if position is None:  # an old-style cursor: a job stored whole
        return cp.store.list_tasks(job.job_id, state, limit, cursor)
    boundary = int(position.get("b", job.task_count if job.materialized is None else job.materialized))
    walk_pending = state is None or state == job.pending_state
    found: list[Task] = []
    if "next" not in position:
        page, store_cursor = cp.store.list_tasks(job.job_id, state, limit, position.get("store"))
        # Past the boundary the second part lists them (in the listing of the pending state).
        found = [t for t in page if not (walk_pending and boundary <= t.index < job.task_count)]
        if store_cursor is not None:
            return found, _encode({"b": boundary, "store": store_cursor})
        if not walk_pending or boundary >= job.task_count:
            return found, None
        position = {"b": boundary, "next": boundary}
    index = int(position["next"])
    reads = 0
    while len(found) < limit and index < job.task_count and reads < MAX_READS_PER_PAGE:
        reads += 1
        span = range(index, min(job.task_count, index + 100))
        stored = cp.store.tasks([(job.job_id, i) for i in span])
        for i in span:
            candidate = stored.get((job.job_id, i)) or job.pending_task(i)
            index = i + 1
            if candidate is not None and (state is None or candidate.state == state):
                found.append(candidate)
                if len(found) >= limit:
                    break
    more = index < job.task_count
    return found, _encode({"b": boundary, "next": index}) if more else None


def _encode(position: dict[str, Any]) -> str:
    return "sweep:" + json.dumps(position, separators=(",", ":"), sort_keys=True)


def _decode(cursor: str | None) -> dict[str, Any] | None:
    """This listing's position ({} at the start), or None for a cursor of the store's own."""
    if cursor is None:
        return {}
    if not cursor.startswith("sweep:"):
        return None
    position = json.loads(cursor[len("sweep:"):])
    if not isinstance(position, dict) or not set(position) <= {"b", "store", "next"}:
        raise ValueError("not a page token of this listing")
    return position
