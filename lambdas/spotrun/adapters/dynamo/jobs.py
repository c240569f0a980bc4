"""Jobs: stored with their tasks in one submit, read, listed newest first, steered, their state re-derived."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import NotOurToken, decode_token, deserialize, encode_token, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.items import event_item, job_from, job_item, task_item
from spotrun.adapters.dynamo.keys import job_key, jobs_by_time_pk
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.model import Desired, Job, JobState, TimelineEvent


class JobStore(Table):
    def create_job(self, job: Job, tasks: Sequence[dict[str, Any]], event: TimelineEvent) -> bool:
        """Store a job and its tasks; False if a job with that id exists already (idempotent submit)."""
        if self.get_job(job.job_id) is not None:
            return False
        self.batch_put(task_item(t, job.created_at) for t in tasks)
        return self._transact([
                {"Put": {"TableName": self.table, "Item": serialize(job_item(job)),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Put": {"TableName": self.table, "Item": serialize(event_item(event))}},
            ])

    def get_job(self, job_id: str) -> Job | None:
        item = self._get(job_key(job_id))
        return job_from(item) if item else None

    def list_jobs(self, states: Sequence[JobState], limit: int, token: str | None) -> tuple[list[Job], str | None]:
        """Jobs newest first across the given states: one key query per state, merged.

        The page token remembers, per state, the last sort key handed out (or that the state is done).
        """
        cursor = _jobs_cursor(token, states)
        fetched: list[tuple[str, dict[str, Any], str]] = []
        exhausted: set[str] = set()
        for state in states:
            position = cursor.get(state.value)
            if position == "done":
                continue
            values = {":p": jobs_by_time_pk(state), **({":s": position} if position else {})}
            answer = self.client.query(
                TableName=self.table, IndexName="jobs_by_time", ScanIndexForward=False, Limit=limit,
                KeyConditionExpression="list_pk = :p" + (" AND list_sk < :s" if position else ""),
                ExpressionAttributeValues=serialize(values),
            )
            rows = [deserialize(i) for i in answer.get("Items", [])]
            fetched.extend((row["list_sk"], row, state.value) for row in rows)
            if not answer.get("LastEvaluatedKey"):
                exhausted.add(state.value)
        fetched.sort(key=lambda entry: entry[0], reverse=True)
        page = fetched[:limit]
        next_cursor = {s.value: cursor.get(s.value) for s in states}
        for sort_key, _, state_name in page:
            next_cursor[state_name] = sort_key
        for state_name in exhausted:
            if all(entry[2] != state_name for entry in fetched[limit:]):
                next_cursor[state_name] = "done"
        more = any(v != "done" for v in next_cursor.values())
        # The index holds keys only (job items change on every task move): read the jobs themselves.
        jobs = [job_from(item) for item in self._hydrate([{"pk": row["pk"], "sk": row["sk"]} for _, row, _ in page])]
        return jobs, encode_token(next_cursor) if more else None

    def set_job_desired(self, job_id: str, desired: Desired, allowed_from: Sequence[Desired], now: datetime) -> bool:
        expr = Expression()
        expr.set("desired", desired)
        expr.set("updated_at", now)
        expr.condition("attribute_exists(pk)")
        expr.condition_in("desired", [d.value for d in allowed_from])
        return self._update(job_key(job_id), expr)

    def set_job_reason(self, job_id: str, reason: str) -> None:
        expr = Expression()
        expr.set("reason", reason[:1024])
        expr.condition("attribute_exists(pk)")
        self._update(job_key(job_id), expr)

    def set_job_policy_note(self, job_id: str, note: str) -> None:
        expr = Expression()
        expr.set("policy_note", note[:1024])
        expr.condition("attribute_exists(pk)")
        self._update(job_key(job_id), expr)

    def refresh_job_state(self, job_id: str, derive: Callable[[dict[str, int], Desired], JobState], now: datetime) -> Job | None:
        """Recompute the job's state from its task counts; guarded so a racing count change wins."""
        for _ in range(5):
            item = self._get(job_key(job_id))
            if item is None:
                return None
            job = job_from(item)
            state = derive(job.counts, job.desired)
            if state == job.state:
                return job
            expr = Expression()
            expr.set("state", state)
            expr.set("list_pk", jobs_by_time_pk(state))
            expr.set("updated_at", now)
            expr.condition("{c} = {v}", c="@counts", v=item.get("counts", {}))
            expr.condition("{s} = {old}", s="@state", old=job.state.value)
            if self._update(job_key(job_id), expr):
                return job_from({**item, "state": state})
        return self.get_job(job_id)


# The jobs_by_time sort key: '<created, ISO UTC with microseconds>#<job id>' (items.job_item).
_LIST_SORT_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z#j-[0-9a-f]{20}")


def _jobs_cursor(token: str | None, states: Sequence[JobState]) -> dict[str, Any]:
    """The cursor of a job listing: per state listed, nothing yet, "done", or the last sort key handed out."""
    cursor = decode_token(token) or {}
    if not set(cursor) <= {s.value for s in states}:
        raise NotOurToken()
    for position in cursor.values():
        if position is not None and position != "done" and not (
                isinstance(position, str) and _LIST_SORT_KEY.fullmatch(position)):
            raise NotOurToken()
    return cursor
