"""What the scheduler asks of the compute port and what it answers: launch requests and results,
which launch errors mean "no capacity here now", and the instances spotrun manages."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

# Launch errors that say "not here, not now": the environment's fault; try the next pool (and cool
# this one down).
CAPACITY_ERRORS = frozenset({
    "InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded", "Unsupported", "InsufficientCapacity", "VcpuLimitExceeded",
})
# Launch errors that say "later": retried, and never a reason to cool a pool down.
THROTTLING_ERRORS = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})


@dataclass(frozen=True)
class LaunchRequest:
    instance_type: str
    zone: str
    spot: bool
    tags: dict[str, str]  # common to every instance of the call
    # One entry per instance wanted, in order. Applied when the call launches one instance; a call
    # for many gives them the common tags only (tagging each afterwards would be one EC2 call per
    # instance): the store's WORKER item says which attempt an instance serves.
    per_instance_tags: list[dict[str, str]]
    token: str  # idempotency: the same request twice launches once (and answers with the same instances)
    cluster: bool = False  # into the zone's cluster placement group (a gang that asked for `placement: cluster`)

    @property
    def count(self) -> int:
        return len(self.per_instance_tags)


@dataclass(frozen=True)
class LaunchResult:
    instance_ids: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str = ""


@dataclass(frozen=True)
class InstanceStatus:
    """What EC2 says of an instance: its state and the reason code of its last transition (API
    StateReason, e.g. `Server.SpotInstanceTermination`; empty when EC2 gives none)."""

    state: str
    reason: str = ""

    @property
    def alive(self) -> bool:
        return self.state in ("pending", "running")


GONE = InstanceStatus("terminated")  # an instance EC2 no longer knows


class ManagedInstance(TypedDict):
    """A live instance spotrun launched, as the reaper sees it."""

    instance_id: str
    state: str
    launched_at: datetime | None
    tags: dict[str, str]


def client_token(parts: Sequence[str]) -> str:
    """An idempotency token for a launch call: the same parts, the same token."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:64]
