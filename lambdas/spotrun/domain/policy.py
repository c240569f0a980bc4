"""The deadline policy: at each decision point, wait, run on spot (in which zone) or run on-demand.

A job with a deadline must finish by it at the least cost. Spot is cheap but comes and goes; on-demand
is dear but always there; every new instance costs a change-over (provisioning, setup, restore) during
which nothing progresses, while checkpoints keep the progress made so far.

The policy is a pure function of `DeadlineState` (no clock, no I/O, no memory between calls), so the
scheduler can call it from any invocation and the benchmark (`bench/policy`) replays it on real traces.

How it decides, in order:
1. Deadline guard. `slack` is the time left once the remaining work and one change-over to on-demand
   are set aside. If not running on-demand now could leave less than `margin` of it by the next
   decision point, run on-demand (and stay there). A job feasible at submission
   (`deadline - now >= work + change-over`) therefore never misses its deadline.
2. Spot when it pays. Among available zones, a start is scored by its expected cost per hour of work:
   the price inflated by the change-over amortised over the run it can expect there (availability runs
   are long-tailed: the longer a zone has been up, the longer it is expected to stay up). A running
   spot instance moves to another zone only for a clear gain (hysteresis).
3. Otherwise wait or run on-demand, by slack management. Slack is the budget for waiting out spot
   outages and for change-overs. The policy keeps a reserve sized for the change-overs the rest of
   the job will need; above the reserve it waits (free), below it covers outages with on-demand and
   returns to spot when spot comes back for long enough to be worth two change-overs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

HOUR = 3600.0


class Action(str, Enum):
    WAIT = "wait"
    SPOT = "spot"
    ON_DEMAND = "on_demand"


@dataclass(frozen=True)
class Placement:
    """Where the job runs now: on-demand, or spot in `zone`; `ready_in` is change-over still to go."""

    action: Action
    zone: str | None = None
    ready_in: timedelta = timedelta(0)


@dataclass(frozen=True)
class ZoneMarket:
    """One zone's spot market as seen now, with what its history says about availability."""

    zone: str
    available: bool
    spot_price: float | None
    mean_up_hours: float = 2.0  # mean length of an availability run
    mean_down_hours: float = 2.0  # mean length of an outage
    state_hours: float = 0.0  # how long the current state (up or down) has lasted

    @property
    def uptime(self) -> float:
        return self.mean_up_hours / (self.mean_up_hours + self.mean_down_hours)


@dataclass(frozen=True)
class DeadlineState:
    """Everything the policy may look at, for one decision."""

    now: datetime
    deadline: datetime
    work_remaining: timedelta  # compute still to do (checkpointed progress already deducted)
    zones: tuple[ZoneMarket, ...]
    on_demand_price: float
    changeover: timedelta = timedelta(minutes=12)  # provisioning + setup + restore of a new instance
    placement: Placement | None = None  # None: nothing runs (never started, or just preempted)
    step: timedelta = timedelta(minutes=5)  # the next decision comes at most this much later

    @property
    def hours_left(self) -> float:
        return (self.deadline - self.now).total_seconds() / HOUR

    @property
    def slack_hours(self) -> float:
        """Time to spare if the rest ran on a new on-demand instance from now on."""
        return self.hours_left - self.work_remaining.total_seconds() / HOUR - self.changeover.total_seconds() / HOUR

    def feasible(self) -> bool:
        """Whether the deadline can still be met (on-demand from now on)."""
        on_demand = self.placement is not None and self.placement.action == Action.ON_DEMAND
        need = self.work_remaining + (self.placement.ready_in if on_demand and self.placement else self.changeover)
        return self.deadline - self.now >= need


@dataclass(frozen=True)
class Decision:
    action: Action
    zone: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class DeadlinePolicy:
    """Parameters of spotrun's deadline policy; `decide` is the policy."""

    margin_hours: float = 0.0  # extra slack the deadline guard keeps on top of one change-over
    reserve_factor: float = 1.0  # change-over reserve: this many change-overs per expected spot run ahead
    min_reserve_hours: float = 0.0
    switch_gain: float = 0.15  # a running spot instance moves zone only if the hourly cost drops this much
    lindy: float = 1.0  # expected remaining run = mean run + lindy * age of the current run
    leave_on_demand_hours: float = 2.0  # leave on-demand to wait only this far above the reserve (x change-over)
    zones_considered: int = 0  # 0 = all
    rule: str = "reserve"
    kappa: float = 1.0
    back_needs_reserve: int = 1
    outage_weight: float = 0.0
    scarcity_weight: float = 1.0

    def decide(self, state: DeadlineState) -> Decision:
        return _decide(self, state)


DEFAULT_POLICY = DeadlinePolicy()


def decide(state: DeadlineState, policy: DeadlinePolicy = DEFAULT_POLICY) -> Decision:
    return policy.decide(state)


def expected_run_hours(market: ZoneMarket, lindy: float = 1.0) -> float:
    """Expected remaining length of the zone's current availability run (0 if it is down)."""
    if not market.available:
        return 0.0
    return market.mean_up_hours + lindy * market.state_hours


def expected_outage_hours(market: ZoneMarket, lindy: float = 1.0) -> float:
    if market.available:
        return 0.0
    return market.mean_down_hours + lindy * market.state_hours


def _decide(p: DeadlinePolicy, s: DeadlineState) -> Decision:
    work = s.work_remaining.total_seconds() / HOUR
    if work <= 0:
        return Decision(Action.WAIT, None, "done")
    d = s.changeover.total_seconds() / HOUR
    step = s.step.total_seconds() / HOUR
    slack = s.slack_hours
    # What remains of the slack, at the next decision point, for waiting and changes (worst case: no progress).
    room = slack - step - p.margin_hours
    placement = s.placement
    by_zone = {m.zone: m for m in s.zones}
    on_od = placement is not None and placement.action == Action.ON_DEMAND
    current: ZoneMarket | None = None
    if placement is not None and placement.action == Action.SPOT and placement.zone in by_zone:
        market = by_zone[placement.zone]
        if market.available:
            current = market

    if room < 0:
        if on_od:
            return Decision(Action.ON_DEMAND, None, f"deadline guard: slack {slack:.2f}h, stay on-demand")
        return Decision(Action.ON_DEMAND, None, f"deadline guard: slack {slack:.2f}h, switch to on-demand")

    od = s.on_demand_price
    reserve = _reserve(p, s, work, d)

    # Spot candidates for a new start: the start must leave room for its own change-over.
    best: ZoneMarket | None = None
    best_cost = math.inf
    best_run = 0.0
    if room >= d:
        for m in s.zones:
            if not m.available or m.spot_price is None or (current is not None and m.zone == current.zone):
                continue
            run = min(expected_run_hours(m, p.lindy), work + d)
            cost = m.spot_price * (1.0 + d / max(run, 1e-6))
            if cost < best_cost:
                best, best_cost, best_run = m, cost, run

    if current is not None:
        price = current.spot_price if current.spot_price is not None else od
        if best is not None and best_cost < price * (1.0 - p.switch_gain) and room - d >= reserve:
            return Decision(Action.SPOT, best.zone,
                            f"move to {best.zone}: ${best_cost:.3f}/h expected vs ${price:.3f}/h here")
        return Decision(Action.SPOT, current.zone, f"stay on spot in {current.zone} at ${price:.3f}/h")

    if best is not None:
        if on_od:
            # Leave on-demand only if the expected spot run saves more than two change-overs cost, and
            # the slack after the change-over still covers the reserve.
            scarce = p.scarcity_weight if room - d < reserve else 0.0
            gain = (od - best.spot_price) * (min(best_run, work) - 2 * d * scarce) - d * (best.spot_price + od)  # type: ignore[operator]
            if gain > 0 and (p.back_needs_reserve == 0 or room - d >= reserve):
                return Decision(Action.SPOT, best.zone,
                                f"back to spot in {best.zone}: expected run {best_run:.1f}h saves ${gain:.2f}")
            return Decision(Action.ON_DEMAND, None,
                            f"stay on-demand: slack {slack:.2f}h, reserve {reserve:.2f}h, spot run {best_run:.1f}h")
        if best_cost < od or room >= reserve:
            return Decision(Action.SPOT, best.zone,
                            f"spot in {best.zone} at ${best.spot_price:.3f}/h, expected run {best_run:.1f}h")

    # No spot worth starting: wait while the slack is above the reserve, else on-demand.
    if on_od:
        if room >= reserve + p.leave_on_demand_hours * d:
            return Decision(Action.WAIT, None, f"leave on-demand: slack {slack:.2f}h well above reserve {reserve:.2f}h")
        return Decision(Action.ON_DEMAND, None, f"stay on-demand: slack {slack:.2f}h, reserve {reserve:.2f}h")
    outage = min((expected_outage_hours(m, p.lindy) for m in s.zones), default=0.0)
    if room - p.outage_weight * outage >= reserve:
        return Decision(Action.WAIT, None, f"wait for spot: slack {slack:.2f}h above reserve {reserve:.2f}h")
    return Decision(Action.ON_DEMAND, None, f"on-demand: slack {slack:.2f}h below reserve {reserve:.2f}h")


def _reserve(p: DeadlinePolicy, s: DeadlineState, work: float, d: float) -> float:
    """Slack to keep for the change-overs the remaining work is expected to need."""
    if p.rule == "shortfall":
        need = math.inf
        for m in s.zones:
            need = min(need, work * (m.mean_down_hours + d) / m.mean_up_hours)
        return max(p.min_reserve_hours, p.kappa * need)
    best_cycle = math.inf
    for m in s.zones:
        cycle = m.mean_up_hours + m.mean_down_hours
        best_cycle = min(best_cycle, cycle)
    if not math.isfinite(best_cycle):
        return p.min_reserve_hours
    runs = work / best_cycle
    return max(p.min_reserve_hours, p.reserve_factor * 2.0 * d * runs)


# ---------- availability history (pure, incremental) ----------


@dataclass(frozen=True)
class ZoneHistory:
    """Decayed record of one zone's spot availability, advanced one observation at a time.

    Means are censoring-aware (time observed in a state / number of runs of that state that ended) and
    start from a prior worth `prior_runs` runs, so a zone seen briefly is not judged on one run.
    """

    zone: str
    available: bool | None = None
    state_hours: float = 0.0
    up_hours: float = 0.0
    down_hours: float = 0.0
    up_ends: float = 0.0
    down_ends: float = 0.0
    half_life_hours: float = 168.0
    prior_up_hours: float = 2.0
    prior_down_hours: float = 2.0
    prior_runs: float = 1.0
    _decay_cache: tuple[float, float] = field(default=(0.0, 1.0), repr=False, compare=False)

    def observe(self, available: bool, hours: float) -> ZoneHistory:
        """The zone was `available` for the last `hours` (the state seen now held since the last look)."""
        if self._decay_cache[0] == hours:
            decay = self._decay_cache[1]
        else:
            decay = 0.5 ** (hours / self.half_life_hours)
        up, down, up_ends, down_ends = (
            self.up_hours * decay, self.down_hours * decay, self.up_ends * decay, self.down_ends * decay
        )
        state_hours = self.state_hours
        if self.available is not None and available != self.available:
            if self.available:
                up_ends += 1.0
            else:
                down_ends += 1.0
            state_hours = 0.0
        if available:
            up += hours
        else:
            down += hours
        return replace(
            self, available=available, state_hours=state_hours + hours, up_hours=up, down_hours=down,
            up_ends=up_ends, down_ends=down_ends, _decay_cache=(hours, decay),
        )

    @property
    def mean_up_hours(self) -> float:
        return (self.up_hours + self.prior_up_hours * self.prior_runs) / (self.up_ends + self.prior_runs)

    @property
    def mean_down_hours(self) -> float:
        return (self.down_hours + self.prior_down_hours * self.prior_runs) / (self.down_ends + self.prior_runs)

    def market(self, spot_price: float | None) -> ZoneMarket:
        return ZoneMarket(
            zone=self.zone, available=bool(self.available), spot_price=spot_price,
            mean_up_hours=self.mean_up_hours, mean_down_hours=self.mean_down_hours, state_hours=self.state_hours,
        )
