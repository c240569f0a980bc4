"""What to do for each instance event EventBridge delivers: two pure functions, each tested as a table.

`classify_event` turns an event into what it asks for (replace, checkpoint early, attempt lost,
ignore); parsers are keyed by (source, detail-type) with a do-nothing fallback, so an unknown or
malformed event is acknowledged and ignored, never retried forever (Karpenter's interruption
controller). `reaction` then decides, for each instance it names, what that means for the task the
instance serves: only the attempt that owns its task is replaced, checkpointed or lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from spotrun.domain.launches import InstanceStatus
from spotrun.domain.model import ACTIVE_STATES, Task, TaskState


class Action(StrEnum):
    REPLACE = "replace"  # final checkpoint now, start the replacement at once, cool the pool down
    CHECKPOINT = "checkpoint"  # early checkpoint only; the instance keeps running
    ATTEMPT_LOST = "attempt_lost"  # the instance is stopping or gone: requeue from the last checkpoint
    MOVE = "move"  # a scheduled change (AWS Health) will take the instance: move the task before it starts
    CANCEL_MOVE = "cancel_move"  # the scheduled change is closed: a move still pending is not needed
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

# The instance states that end an attempt.
INSTANCE_ENDED_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
# What the EventBridge rule delivers (spotrun.resources): the first state of each way an instance ends. EC2
# takes a terminated instance through shutting-down, a stopped one through stopping (its documented state
# changes), so the later state would only repeat the news, as one more message and invocation per instance.
# A lost event is still found by the reaper (no heartbeat); the handler acts on any of the four.
INSTANCE_ENDING_STATES = frozenset({"stopping", "shutting-down"})
# An EC2 instance id: 'i-' and hex digits (8 or 17 today), at most 64 characters as the store keeps it.
INSTANCE_ID = re.compile(r"i-[0-9a-f]{1,62}")


class BadInstanceId(ValueError):
    """The event names its instance with something that is not an EC2 instance id."""


def _instance_id(value: Any) -> str:
    if not isinstance(value, str) or not INSTANCE_ID.fullmatch(value):
        raise BadInstanceId(f"not an instance id: {str(value)[:80]!r}")
    return value


def _word(value: Any) -> str:
    """A word of the event quoted in a reason (which the task and its timeline keep): short, one line."""
    return "".join(c for c in str(value)[:64] if c.isprintable())


def _time(value: Any) -> datetime | None:
    """An event's time, always aware and in UTC: EventBridge writes ISO 8601 UTC ('...Z'), AWS Health
    its startTime as an HTTP date ('Wed, 25 Nov 2026 10:00:00 GMT'); a time without a zone is UTC."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = parsedate_to_datetime(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        return None


def _spot_warning(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    return InstanceEvent(
        Action.REPLACE, (_instance_id(detail["instance-id"]),), "SpotInterruptionWarning", _time(event.get("time")),
        not_before=_time(event.get("time")), reason=f"spot interruption warning ({_word(detail.get('instance-action', 'terminate'))})",
    )


def _rebalance(event: dict[str, Any]) -> InstanceEvent:
    return InstanceEvent(
        Action.CHECKPOINT, (_instance_id(event["detail"]["instance-id"]),), "RebalanceRecommendation", _time(event.get("time")),
        reason="rebalance recommendation",
    )


def _state_change(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    state = detail["state"]
    instance_id = _instance_id(detail["instance-id"])
    if state not in INSTANCE_ENDED_STATES:
        return InstanceEvent(Action.IGNORE, (instance_id,), "StateChange", _time(event.get("time")))
    return InstanceEvent(
        Action.ATTEMPT_LOST, (instance_id,), "InstanceStateChange", _time(event.get("time")),
        reason=f"instance {state}",
    )


def _health(event: dict[str, Any]) -> InstanceEvent:
    detail = event["detail"]
    if detail.get("service") != "EC2" or detail.get("eventTypeCategory") != "scheduledChange":
        return IGNORED
    entities = detail.get("affectedEntities", [])
    if not isinstance(entities, list):
        return IGNORED
    ids = tuple(dict.fromkeys(
        entity["entityValue"] for entity in entities
        if isinstance(entity, dict) and isinstance(entity.get("entityValue"), str)
        and INSTANCE_ID.fullmatch(entity["entityValue"])
    ))  # other entities (volumes, hosts, malformed ids) are not spotrun's to act on
    if not ids:
        return InstanceEvent(Action.IGNORE, (), "HealthScheduledChange", _time(event.get("time")))
    starts = _time(detail.get("startTime"))
    what = f"scheduled change {_word(detail.get('eventTypeCode', ''))}".strip()
    if detail.get("statusCode") == "closed":  # over, or cancelled: nothing will take the instance
        return InstanceEvent(Action.CANCEL_MOVE, ids, "HealthScheduledChangeClosed", _time(event.get("time")),
                             not_before=starts, reason=f"{what} closed")
    return InstanceEvent(  # open or upcoming
        Action.MOVE, ids, "HealthScheduledChange", _time(event.get("time")), not_before=starts,
        reason=what + (f" at {starts:%Y-%m-%d %H:%M} UTC" if starts else ""),
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
    source, detail_type = event.get("source"), event.get("detail-type")
    if not isinstance(source, str) or not isinstance(detail_type, str):  # a list here is no key (found by fuzzing)
        return IGNORED
    parser = PARSERS.get((source, detail_type))
    if parser is None:
        return IGNORED
    try:
        return parser(event)
    except BadInstanceId as bad:
        return InstanceEvent(Action.IGNORE, (), str(event.get("detail-type"))[:128], reason=str(bad))
    except (KeyError, TypeError, AttributeError):
        return IGNORED
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - e.g. RecursionError quoting a field nested 5,000 levels deep
        return InstanceEvent(Action.IGNORE, (), str(event.get("detail-type"))[:128],
                             reason=f"unreadable event: {type(error).__name__}")


class Reaction(StrEnum):
    """What the control plane does for one instance of an event, given the task the instance serves."""

    REPLACE = "replace"  # cool the pool down, start the next attempt now while this one checkpoints
    REQUEST_CHECKPOINT = "request_checkpoint"  # ask the running attempt for an early checkpoint
    LOSE_ATTEMPT = "lose_attempt"  # the attempt is gone without a report: requeue from its checkpoint
    MOVE = "move"  # move the attempt's task off its instance before a scheduled change (now, or when due)
    END_SUPERSEDED_ATTEMPT = "end_superseded_attempt"  # an already replaced attempt's instance is gone: bill its end
    IGNORE = "ignore"


def reaction(action: Action, task: Task, worker_attempt: int) -> Reaction:
    """The reaction to `action` for an instance serving `worker_attempt` of `task` (as stored now)."""
    owns = task.attempt == worker_attempt and task.state in ACTIVE_STATES
    if action == Action.REPLACE and owns:
        return Reaction.REPLACE
    if action == Action.MOVE and owns:
        return Reaction.MOVE
    if action == Action.CHECKPOINT and owns and task.state == TaskState.RUNNING:
        return Reaction.REQUEST_CHECKPOINT
    if action == Action.ATTEMPT_LOST and owns:
        return Reaction.LOSE_ATTEMPT
    if action == Action.ATTEMPT_LOST and worker_attempt < task.attempt:
        return Reaction.END_SUPERSEDED_ATTEMPT
    return Reaction.IGNORE


# EC2's state reasons for an instance Spot took back (API StateReason): terminated, or stopped.
SPOT_RECLAIM_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})


def lost_instance(status: InstanceStatus, signal: str) -> tuple[bool, str]:
    """An attempt's instance is gone (a state change, or the reaper found its heartbeats stopped): was it a
    spot reclaim, and the reason to record. The two-minute warning is best effort, so a reclaim is known by
    what EC2 says of the instance, whichever signal came first or alone."""
    if status.reason in SPOT_RECLAIM_REASONS:
        return True, f"spot reclaim without a warning ({signal}; EC2: {status.reason})"
    return False, f"{signal}" + (f" (EC2: {status.state}, {status.reason})" if status.reason else "")


@dataclass(frozen=True)
class ScheduledMove:
    """A task to move off `instance_id` at `move_at`, before a scheduled change starts (`starts_at`)."""

    instance_id: str
    move_at: datetime
    starts_at: datetime | None
    reason: str


def move_time(starts_at: datetime | None, now: datetime, lead: timedelta) -> datetime:
    """When to move a task off an instance a scheduled change will take: `lead` before the change starts
    (the final checkpoint and the replacement's boot fit in it), not weeks early; at once when that time
    has passed, the change is under way, or its start is unknown."""
    if starts_at is None:
        return now
    return max(now, starts_at - lead)
