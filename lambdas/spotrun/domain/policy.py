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
   (`deadline - now >= work + change-over`) therefore never misses its deadline, provided the next
   decision comes within `step` and on-demand capacity can be had.
2. Spot when it pays. Among available zones, a start is scored by its expected cost per hour of work:
   the price inflated by the change-over amortised over the run it can expect there (availability runs
   are long-tailed: the longer a zone has been up, the longer it is expected to stay up). A running
   spot instance moves to another zone only for a clear gain (hysteresis).
3. Otherwise wait or run on-demand, by slack management. Slack is the budget for waiting out spot
   outages and for change-overs. The policy keeps a reserve sized for the change-overs the rest of
   the job will need; above the reserve it waits (free), below it covers outages with on-demand, and
   it returns to spot once spot has been back for a while (hysteresis) and its expected run saves
   more than the two change-overs of the round trip.

The scheduler keeps one `ZoneHistory` per zone (or pool), advanced on each look at the market, and
builds the `ZoneMarket`s from them; `placement` and `work_remaining` come from the task's attempt and
its last committed checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

HOUR = 3600.0


class Action(StrEnum):
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
    """Parameters of spotrun's deadline policy; `decide` is the policy.

    The defaults are the ones `bench/policy` measured (see bench/README.md); the results are flat
    around them (reserve_factor 1.5-3, lindy 0.5-1, return_after_changeovers 1.5-3 move the
    single-zone cost by about 1%).
    """

    margin_hours: float = 0.05  # slack the deadline guard keeps on top of one change-over and one step
    reserve_factor: float = 2.0  # change-overs kept in reserve per availability cycle of the remaining work
    lindy: float = 1.0  # expected remaining spot run = mean run + lindy * age of the current run
    switch_gain: float = 0.15  # a running spot instance moves zone only if its hourly cost drops this much
    # Leave on-demand to wait only with this many change-overs of slack above the reserve. Never, by
    # default: the replay showed that waiting after on-demand costs more in returns than it saves.
    leave_on_demand_changeovers: float = math.inf
    # Leave on-demand for spot only once the zone has been back this many change-overs: many availability
    # runs are short blips (the median run is a fraction of the mean), and one that survived a while is
    # expected to last. Fewer round trips, each of which costs two change-overs.
    return_after_changeovers: float = 2.0

    def decide(self, state: DeadlineState) -> Decision:
        return _decide(self, state)


DEFAULT_POLICY = DeadlinePolicy()


def decide(state: DeadlineState, policy: DeadlinePolicy = DEFAULT_POLICY) -> Decision:
    return policy.decide(state)


def expected_run_hours(market: ZoneMarket, lindy: float = 1.0) -> float:
    """Expected remaining length of the zone's current availability run (0 if it is down).

    Availability runs are long-tailed (median well under the mean), so a run that has lasted long is
    expected to last longer: mean + lindy * age.
    """
    if not market.available:
        return 0.0
    return market.mean_up_hours + lindy * market.state_hours


def change_over_reserve(policy: DeadlinePolicy, zones: tuple[ZoneMarket, ...], work_hours: float,
                        changeover_hours: float) -> float:
    """Slack to keep for the change-overs the remaining work will need.

    With on-demand covering outages, each availability cycle of the most reliable zone costs about two
    change-overs (to spot and back); the reserve keeps `reserve_factor` times that for the work left.
    """
    if not zones:
        return 0.0
    steady = max(zones, key=lambda m: m.uptime)
    cycles = work_hours / (steady.mean_up_hours + steady.mean_down_hours)
    return policy.reserve_factor * 2.0 * changeover_hours * cycles


def _decide(p: DeadlinePolicy, s: DeadlineState) -> Decision:
    work = s.work_remaining.total_seconds() / HOUR
    if work <= 0:
        return Decision(Action.WAIT, None, "done")
    d = s.changeover.total_seconds() / HOUR
    step = s.step.total_seconds() / HOUR
    slack = s.slack_hours
    # Slack left at the next decision point in the worst case (no progress until then).
    room = slack - step - p.margin_hours
    on_od = s.placement is not None and s.placement.action == Action.ON_DEMAND
    current = _running_spot(s)

    # 1. Deadline guard: on-demand now, or the deadline could become unreachable.
    if room < 0:
        verb = "stay on" if on_od else "switch to"
        return Decision(Action.ON_DEMAND, None, f"deadline guard: slack {slack:.2f}h, {verb} on-demand")

    od = s.on_demand_price
    reserve = change_over_reserve(p, s.zones, work, d)

    # 2. The best spot zone to start in; a start must leave room for its own change-over.
    best: ZoneMarket | None = None
    best_price = best_cost = math.inf
    best_run = 0.0
    if room >= d:
        for m in s.zones:
            if not m.available or m.spot_price is None or (current is not None and m.zone == current.zone):
                continue
            run = min(expected_run_hours(m, p.lindy), work + d)
            cost = m.spot_price * (1.0 + d / max(run, 1e-6))  # change-over amortised over the run
            if cost < best_cost:
                best, best_price, best_cost, best_run = m, m.spot_price, cost, run

    if current is not None:
        price = current.spot_price if current.spot_price is not None else od
        if best is not None and best_cost < price * (1.0 - p.switch_gain) and room - d >= reserve:
            return Decision(Action.SPOT, best.zone, f"move to {best.zone}: ${best_cost:.3f}/h expected "
                                                    f"vs ${price:.3f}/h in {current.zone}")
        return Decision(Action.SPOT, current.zone, f"stay on spot in {current.zone} at ${price:.3f}/h")

    if best is not None:
        run = min(best_run, work)
        if on_od:
            # Spot for `run` hours instead of on-demand costs a change-over at the spot price now and
            # one at the on-demand price when the run ends.
            gain = (od - best_price) * run - d * (best_price + od)
            if gain > 0 and best.state_hours >= p.return_after_changeovers * d:
                return Decision(Action.SPOT, best.zone, f"back to spot in {best.zone} at ${best_price:.3f}/h: "
                                                        f"expected run {run:.1f}h saves ${gain:.2f}")
            return Decision(Action.ON_DEMAND, None, f"stay on-demand: spot in {best.zone} back for "
                                                    f"{best.state_hours:.2f}h, expected run {run:.1f}h")
        # From nothing either start costs a change-over; spot also costs one more when it ends.
        if room >= reserve or (od - best_price) * run > best_price * d:
            return Decision(Action.SPOT, best.zone, f"spot in {best.zone} at ${best_price:.3f}/h, "
                                                    f"expected run {run:.1f}h")

    # 3. No spot worth starting: wait while the slack is above the reserve, else on-demand.
    if on_od:
        if room >= reserve + p.leave_on_demand_changeovers * d:
            return Decision(Action.WAIT, None, f"leave on-demand: slack {slack:.2f}h, reserve {reserve:.2f}h")
        return Decision(Action.ON_DEMAND, None, f"stay on-demand: no spot, slack {slack:.2f}h")
    if room >= reserve:
        return Decision(Action.WAIT, None, f"wait for spot: slack {slack:.2f}h above reserve {reserve:.2f}h")
    return Decision(Action.ON_DEMAND, None, f"on-demand: slack {slack:.2f}h below reserve {reserve:.2f}h")


def _running_spot(s: DeadlineState) -> ZoneMarket | None:
    """The zone the job runs in on spot, if that zone is still available."""
    if s.placement is None or s.placement.action != Action.SPOT:
        return None
    for m in s.zones:
        if m.zone == s.placement.zone:
            return m if m.available else None
    return None


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
        decay = self._decay_cache[1] if self._decay_cache[0] == hours else 0.5 ** (hours / self.half_life_hours)
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
