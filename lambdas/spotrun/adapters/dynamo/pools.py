"""Pools: their statistics (executions, failures, interruptions, load) and cool-downs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from spotrun.adapters.dynamo.codec import iso, parse_time, serialize
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.keys import pool_key
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.model import PoolStats


def pool_stats_item(table: str, pool: str, deltas: Mapping[str, float]) -> dict[str, Any]:
    """A transaction item adding `deltas` (executions, failures, running, ...) to a pool's statistics."""
    expr = Expression()
    for name, amount in deltas.items():
        if amount:
            expr.add(name, amount)
    return {"Update": {"TableName": table, "Key": serialize(pool_key(pool)), **expr.update()}}


class PoolStore(Table):
    def pool_stats(self, pools: Sequence[str]) -> dict[str, PoolStats]:
        out: dict[str, PoolStats] = {}
        for item in self._hydrate([pool_key(p) for p in pools]):
            name = item["pk"].removeprefix("POOL#")
            out[name] = PoolStats(
                name, int(item.get("executions", 0)), int(item.get("failures", 0)),
                int(item.get("interruptions", 0)), float(item.get("exec_seconds", 0)), int(item.get("running", 0)),
                parse_time(item.get("cooldown_until")), item.get("cooldown_reason", ""), parse_time(item.get("cooled_at")),
                float(item.get("upload_bytes", 0)), float(item.get("upload_seconds", 0)),
            )
        return out

    def record_pool_upload(self, pool: str, size_bytes: int, seconds: float) -> None:
        """Add one checkpoint upload an agent measured in `pool` to the pool's statistics."""
        expr = Expression()
        expr.add("upload_bytes", size_bytes)
        expr.add("upload_seconds", seconds)
        self.client.update_item(TableName=self.table, Key=serialize(pool_key(pool)), **expr.update())

    def cool_down(self, pool: str, until: datetime, reason: str = "", at: datetime | None = None) -> None:
        expr = Expression()
        expr.set("cooldown_until", until)
        expr.set("cooldown_reason", reason[:200])
        if at is not None:
            expr.set("cooled_at", at)
        expr.condition("attribute_not_exists({c}) OR {c} < {until}", c="@cooldown_until", until=iso(until))
        self._update(pool_key(pool), expr)
