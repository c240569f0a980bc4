"""Scheduled moves: a task to move off an instance before a scheduled change (AWS Health) takes it, one
item per instance (a newer notice of the same instance's change replaces the older one)."""

from __future__ import annotations

from spotrun.adapters.dynamo.codec import deserialize, parse_time, serialize
from spotrun.adapters.dynamo.keys import MOVES_PK, scheduled_move_key
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.interruptions import ScheduledMove


class ScheduledMoveStore(Table):
    def schedule_move(self, move: ScheduledMove) -> None:
        self._put({**scheduled_move_key(move.instance_id), "type": "move", "instance_id": move.instance_id,
                   "move_at": move.move_at, "starts_at": move.starts_at, "reason": move.reason})

    def scheduled_moves(self, limit: int) -> list[ScheduledMove]:
        answer = self.client.query(TableName=self.table, KeyConditionExpression="pk = :p", Limit=limit,
                                   ExpressionAttributeValues=serialize({":p": MOVES_PK}))
        moves = []
        for raw in answer.get("Items", []):
            item = deserialize(raw)
            moves.append(ScheduledMove(item["instance_id"], parse_time(item["move_at"]),  # type: ignore[arg-type]
                                       parse_time(item.get("starts_at")), item.get("reason", "")))
        return sorted(moves, key=lambda move: move.move_at)

    def forget_move(self, instance_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key=serialize(scheduled_move_key(instance_id)))
