"""What to do for each instance event EventBridge delivers: one pure function, tested as a table.

Parsers are keyed by (source, detail-type) with a do-nothing fallback, so an unknown or malformed
event is acknowledged and ignored, never retried forever (Karpenter's interruption controller).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    REPLACE = "replace"  # final checkpoint now, start the replacement at once, cool the pool down
    CHECKPOINT = "checkpoint"  # early checkpoint only; the instance keeps running
    ATTEMPT_LOST = "attempt_lost"  # the instance is stopping or gone: requeue from the last checkpoint
    IGNORE = "ignore"


@dataclass(frozen=True)
class InstanceEvent:
    action: Action
    instance_ids: tuple[str, ...]
    kind: str
    at: datetime | None = None  # the event's own time, for latency metrics
    not_before: datetime | None = None  # when the instance goes away, if known
    reason: str = ""


IGNORED = InstanceEvent(Action.IGNORE, (), "unknown")

_LOST_STATES = {"stopping", "stopped", "shutting-down", "terminated"}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _spot_warning(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    return InstanceEvent(
        Action.REPLACE, (detail["instance-id"],), "SpotInterruptionWarning", _time(event.get("time")),
        not_before=_time(event.get("time")), reason=f"spot interruption warning ({detail.get('instance-action', 'terminate')})",
    )


def _rebalance(event: dict[str, Any]) -> InstanceEvent:
    return InstanceEvent(
        Action.CHECKPOINT, (event["detail"]["instance-id"],), "RebalanceRecommendation", _time(event.get("time")),
        reason="rebalance recommendation",
    )


def _state_change(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    state = detail["state"]
    if state not in _LOST_STATES:
        return InstanceEvent(Action.IGNORE, (detail["instance-id"],), "StateChange", _time(event.get("time")))
    return InstanceEvent(
        Action.ATTEMPT_LOST, (detail["instance-id"],), "InstanceStateChange", _time(event.get("time")),
        reason=f"instance {state}",
    )


def _health(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    if detail.get("service") != "EC2" or detail.get("eventTypeCategory") != "scheduledChange":
        return IGNORED
    ids = tuple(
        entity["entityValue"] for entity in detail.get("affectedEntities", [])
        if isinstance(entity, dict) and str(entity.get("entityValue", "")).startswith("i-")
    )
    return InstanceEvent(
        Action.REPLACE, ids, "HealthScheduledChange", _time(event.get("time")),
        not_before=_time(detail.get("startTime")), reason=f"scheduled change {detail.get('eventTypeCode', '')}".strip(),
    )


PARSERS: dict[tuple[str, str], Callable[[dict[str, Any]], InstanceEvent]] = {
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"): _spot_warning,
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"): _rebalance,
    ("aws.ec2", "EC2 Instance State-change Notification"): _state_change,
    ("aws.health", "AWS Health Event"): _health,
}


def classify_event(event: Any) -> InstanceEvent:
    """Map an EventBridge event to what spotrun does about it; anything unexpected is IGNORE."""
    if not isinstance(event, dict):
        return IGNORED
    parser = PARSERS.get((event.get("source"), event.get("detail-type")))  # type: ignore[arg-type]
    if parser is None:
        return IGNORED
    try:
        return parser(event)
    except (KeyError, TypeError, AttributeError):
        return IGNORED
