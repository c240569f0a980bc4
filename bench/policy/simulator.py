"""Replaying a trace window against an online policy, tick by tick.

Semantics (the same for every policy):
- At each tick the policy sees the present availability and price of its zones (and their history),
  the time to the deadline, the work left and where it runs, and answers WAIT, SPOT(zone) or ON_DEMAND.
- A spot instance in a zone that is unavailable at a tick was lost at that tick (preempted); the
  policy then sees no placement. Progress is kept (checkpointed); nothing else is lost.
- Every new instance (a start, a zone change, a move between spot and on-demand, a restart after a
  preemption) first spends the change-over without progress; it is billed at the instance's price.
- Billing is per second of each tick at that tick's price; the tick in which the job ends is billed
  only up to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from bench.policy.traces import Trace
from spotrun.domain.policy import Action, DeadlineState, Decision, Placement, ZoneMarket

EPS = 1e-9


class OnlinePolicy(Protocol):
    def decide(self, state: DeadlineState) -> Decision: ...


@dataclass(frozen=True)
class Job:
    hours: float = 48.0
    deadline_hours: float = 60.0
    changeover_hours: float = 0.2


@dataclass
class RunResult:
    cost: float = 0.0
    spot_hours: float = 0.0
    on_demand_hours: float = 0.0
    starts: int = 0
    preemptions: int = 0
    finished_hours: float = 0.0  # time from submission to completion
    missed: bool = False

    @property
    def changes(self) -> int:
        """Instances started after the first one."""
        return max(0, self.starts - 1)


def simulate(
    policy: OnlinePolicy,
    trace: Trace,
    markets: list[list[ZoneMarket]],
    zones: list[int],
    start: int,
    job: Job,
) -> RunResult:
    dt = trace.tick_hours
    step = timedelta(hours=dt)
    changeover = timedelta(hours=job.changeover_hours)
    submitted = trace.time(start)
    deadline = submitted + timedelta(hours=job.deadline_hours)
    od_price = trace.on_demand_price
    index = {trace.zones[z]: z for z in zones}
    result = RunResult()
    work = job.hours
    mode: int | None = None  # None idle, -1 on-demand, z >= 0 spot in zone z
    setup = 0.0  # change-over hours still to go on the current instance
    t = start
    elapsed = 0.0
    placement: Placement | None = None
    while work > EPS:
        if elapsed > job.deadline_hours + EPS or t >= trace.ticks:
            # Missed (or out of trace): finish on on-demand to price the damage, and flag it.
            result.missed = True
            extra = work + (setup if mode == -1 else job.changeover_hours)
            result.cost += od_price * extra
            result.on_demand_hours += extra
            elapsed += extra
            break
        if mode is not None and mode >= 0 and not trace.available[mode][t]:
            result.preemptions += 1
            mode, setup, placement = None, 0.0, None
        if placement is not None and setup > 0:
            placement = Placement(placement.action, placement.zone, timedelta(hours=setup))
        state = DeadlineState(
            now=submitted + timedelta(hours=elapsed),
            deadline=deadline,
            work_remaining=timedelta(hours=work),
            zones=tuple(markets[z][t] for z in zones),
            on_demand_price=od_price,
            changeover=changeover,
            placement=placement,
            step=step,
        )
        decision = policy.decide(state)
        if decision.action == Action.SPOT:
            z = index[decision.zone]  # type: ignore[index]
            if not trace.available[z][t]:
                raise AssertionError(f"policy chose unavailable zone {decision.zone}: {decision.reason}")
            if mode != z:
                mode, setup = z, job.changeover_hours
                result.starts += 1
                placement = Placement(Action.SPOT, decision.zone, changeover)
        elif decision.action == Action.ON_DEMAND:
            if mode != -1:
                mode, setup = -1, job.changeover_hours
                result.starts += 1
                placement = Placement(Action.ON_DEMAND, None, changeover)
        else:
            mode, setup, placement = None, 0.0, None
        if mode is not None:
            price = od_price if mode == -1 else trace.prices[mode][t]
            spent = min(dt, setup)
            setup -= spent
            progress = dt - spent
            billed = dt
            if progress >= work - EPS:
                billed = spent + work
                progress = work
            if setup <= 0 and placement is not None and placement.ready_in:
                placement = Placement(placement.action, placement.zone)
            work -= progress
            result.cost += price * billed
            if mode == -1:
                result.on_demand_hours += billed
            else:
                result.spot_hours += billed
            elapsed += billed if work <= EPS else dt
        else:
            elapsed += dt
        t += 1
    result.finished_hours = elapsed
    if elapsed > job.deadline_hours + 1e-6:
        result.missed = True
    return result
