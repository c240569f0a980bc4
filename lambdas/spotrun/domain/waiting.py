"""Why a job's queued tasks wait: the job's or the account's cap, or pools without capacity (which ones,
since when, until when they cool down), when the scheduler tries again, and whether the deadline policy
or the on-demand fallback steps in. Pure: `jobs.job_status` gathers the facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spotrun.domain.broker import PoolState


@dataclass(frozen=True)
class PoolWait:
    pool: str
    why: str  # EC2's refusal ("InsufficientInstanceCapacity"), "spot reclaim", "full", ...
    since: datetime | None  # when it was refused (or reclaimed)
    until: datetime | None  # when its cool-down ends


@dataclass(frozen=True)
class Waiting:
    queued: int
    summary: str
    pools: tuple[PoolWait, ...]
    next_try_at: datetime | None
    deadline_policy: str | None
    on_demand: str


@dataclass(frozen=True)
class WaitFacts:
    queued: int
    active: int
    max_concurrency: int
    account_active: int
    account_cap: int
    pools: Sequence[PoolState]  # the pools the job's tasks may use (the broker's catalogue fit already applied)
    cooldown_reasons: dict[str, tuple[str, datetime | None]]  # pool -> (why, since)
    faults_in_a_row: int  # the most consecutive environment faults among the queued tasks
    on_demand_after: int  # the scheduler's fallback threshold
    sweep_every: timedelta  # the reaper's reconcile: the latest the scheduler tries again
    deadline_policy: str | None = None  # what the deadline policy decides now, said in words


def why_waiting(facts: WaitFacts, now: datetime) -> Waiting | None:
    """None when nothing waits; else what holds the queued tasks back and what happens next."""
    if facts.queued <= 0:
        return None
    on_demand = (f"yes: a queued task had {facts.faults_in_a_row} environment faults in a row, so its next launch "
                 "is on-demand" if facts.faults_in_a_row >= facts.on_demand_after else
                 f"no: refused launches are not faults; a task moves to on-demand after {facts.on_demand_after} "
                 "environment faults in a row")
    next_sweep = now + facts.sweep_every
    if facts.active >= facts.max_concurrency:
        return Waiting(facts.queued, f"{facts.queued} task(s) wait for a slot: {facts.active} of max_concurrency "
                       f"{facts.max_concurrency} hold a worker", (), None, facts.deadline_policy, on_demand)
    if facts.account_active >= facts.account_cap:
        return Waiting(facts.queued, f"{facts.queued} task(s) wait for the account's instance cap "
                       f"({facts.account_active} of {facts.account_cap} in use)", (), next_sweep,
                       facts.deadline_policy, on_demand)
    held = []
    for state in facts.pools:
        key = state.pool.key
        why, since = facts.cooldown_reasons.get(key, ("", None))
        if state.cooldown_until is not None and state.cooldown_until > now:
            held.append(PoolWait(key, why or "cooling down", since, state.cooldown_until))
        elif state.running >= state.cap:
            held.append(PoolWait(key, f"full: {state.running}/{state.cap} running", None, None))
    if facts.pools and len(held) == len(facts.pools):
        ends = [p.until for p in held if p.until is not None]
        next_try = min(ends) if ends else next_sweep
        return Waiting(facts.queued, f"{facts.queued} task(s) wait: no capacity in any of the {len(held)} pools "
                       "the job may use", tuple(held), next_try, facts.deadline_policy, on_demand)
    summary = (f"{facts.queued} task(s) queued; {len(facts.pools) - len(held)} of {len(facts.pools)} pools may take "
               "them at the scheduler's next try" if facts.pools else f"{facts.queued} task(s) queued: no pool fits them")
    return Waiting(facts.queued, summary, tuple(held), next_sweep if facts.pools else None, facts.deadline_policy,
                   on_demand)
