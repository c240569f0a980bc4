"""The policies spotrun's is compared with, on the same `DeadlineState` interface (single zone)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spotrun.domain.policy import Action, DeadlineState, Decision

HOUR = 3600.0


def _hours(state: DeadlineState) -> tuple[float, float, float, float]:
    left = state.hours_left
    work = state.work_remaining.total_seconds() / HOUR
    d = state.changeover.total_seconds() / HOUR
    step = state.step.total_seconds() / HOUR
    return left, work, d, step


def _on_demand(state: DeadlineState) -> bool:
    return state.placement is not None and state.placement.action == Action.ON_DEMAND


def _spot_zone(state: DeadlineState) -> str | None:
    for market in state.zones:
        if market.available:
            return market.zone
    return None


class OnDemandOnly:
    def decide(self, state: DeadlineState) -> Decision:
        return Decision(Action.ON_DEMAND, None, "on-demand only")


class Greedy:
    """Spot whenever available, otherwise wait; on-demand to the end once the slack is gone."""

    def decide(self, state: DeadlineState) -> Decision:
        left, work, d, step = _hours(state)
        if _on_demand(state) or left - step - work - d < 0:
            return Decision(Action.ON_DEMAND, None, "slack gone")
        zone = _spot_zone(state)
        if zone is not None:
            return Decision(Action.SPOT, zone, "spot available")
        return Decision(Action.WAIT, None, "wait for spot")


@dataclass
class UniformProgress:
    """Uniform Progress (Can't Be Late, NSDI'24), single zone, as the paper states its rules:

    1. Uniform progress: when idle and behind the expected progress ep(t) = C * t / D, use on-demand.
    2. Taking risks: use spot whenever it is available, and stay on it until preempted.
    3. Hysteresis: when on on-demand, stay on it until progress >= ep(t + 2d).
    4. Safety net: when R(t) < C(t) + 2d (time left < work left + 2 change-overs), on-demand to the end.
    The safety net is applied in every state (not only when idle) and also whenever the next tick could
    be too late for a change-over, so that discrete ticks cannot make it miss.
    """

    submitted: datetime
    deadline: datetime
    work_total_hours: float

    def decide(self, state: DeadlineState) -> Decision:
        left, work, d, step = _hours(state)
        total = (self.deadline - self.submitted).total_seconds() / HOUR
        elapsed = (state.now - self.submitted).total_seconds() / HOUR
        done = self.work_total_hours - work

        def expected(at: float) -> float:
            return self.work_total_hours * at / total

        on_od = _on_demand(state)
        if left < work + 2 * d or left - step - work - d < 0:
            return Decision(Action.ON_DEMAND, None, "safety net")
        zone = _spot_zone(state)
        if on_od and done < expected(elapsed + 2 * d):
            return Decision(Action.ON_DEMAND, None, "hysteresis: stay on on-demand")
        if zone is not None:
            return Decision(Action.SPOT, zone, "spot available")
        if done < expected(elapsed):
            return Decision(Action.ON_DEMAND, None, "behind uniform progress")
        return Decision(Action.WAIT, None, "ahead of uniform progress")
