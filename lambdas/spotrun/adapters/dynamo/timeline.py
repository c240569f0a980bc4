"""The timeline: each job's events, sharded like its tasks, read back oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spotrun.adapters.dynamo.codec import deserialize, serialize
from spotrun.adapters.dynamo.items import event_from, event_item
from spotrun.adapters.dynamo.keys import TASK_SHARDS, events_pk, shard_of
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.model import TimelineEvent


class TimelineStore(Table):
    def add_event(self, event: TimelineEvent) -> None:
        self._put(event_item(event))

    def add_events(self, events: Sequence[TimelineEvent]) -> None:
        self.batch_put(event_item(e) for e in events)

    def timeline(self, job_id: str, limit: int, after: str | None = None, newest: bool = False) -> list[TimelineEvent]:
        """Events oldest first: the first `limit` (after the cursor `after`), or the newest `limit`."""
        events: list[tuple[str, TimelineEvent]] = []
        for shard in range(TASK_SHARDS):
            params: dict[str, Any] = {
                "TableName": self.table, "Limit": limit, "KeyConditionExpression": "pk = :p" + (" AND sk > :a" if after else ""),
                "ExpressionAttributeValues": serialize({":p": events_pk(job_id, shard), **({":a": after} if after else {})}),
                "ScanIndexForward": not newest,
            }
            for raw in self.client.query(**params).get("Items", []):
                item = deserialize(raw)
                events.append((item["sk"], event_from(item)))
        events.sort(key=lambda pair: pair[0])
        return [e for _, e in (events[-limit:] if newest else events[:limit])]

    def task_events(self, job_id: str, index: int, kind: str, limit: int, pages: int = 4) -> list[TimelineEvent]:
        """One task's newest `limit` events of one kind, newest first: its shard read back from the newest
        end, at most `pages` pages (a task's recent events are there; an older one past them is not shown)."""
        found: list[TimelineEvent] = []
        params: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :p", "ScanIndexForward": False,
            "FilterExpression": "#i = :i AND #k = :k", "ExpressionAttributeNames": {"#i": "index", "#k": "kind"},
            "ExpressionAttributeValues": serialize({":p": events_pk(job_id, shard_of(index)), ":i": index, ":k": kind}),
        }
        for _ in range(pages):
            answer = self.client.query(**params)
            found.extend(event_from(deserialize(raw)) for raw in answer.get("Items", []))
            if len(found) >= limit or "LastEvaluatedKey" not in answer:
                break
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found[:limit]
