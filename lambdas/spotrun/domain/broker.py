"""The broker: which pools (instance type x availability zone) a task may run in, best first.

Pure: the scheduler gathers what spotrun knows of each pool (catalogue sizes, prices, its own
statistics, load, cool-down) into `PoolState`s and calls `rank_pools`; the answer carries the reasons
for every choice and every rejection, so the decision can go on the task's timeline as it is.

The score is an expected cost per hour of useful work, lower is better:

    price                      spot price now (else on-demand x (1 - advisor savings), else on-demand)
    x (1 + rate x loss)        interruptions per hour (observed, blended with the advisor band) times
                               the hours each one costs (change-over and work since the last checkpoint)
    / (1 - failure ratio)      attempts that end in an environment failure are paid for nothing
    x speed                    the pool's observed mean execution time over the typical pool's
    x (1 + load penalty)       grows as the pool fills up to its cap, so one pool is not overloaded
    x (1 + unfit penalty)      when the task's final checkpoint, at the pool's measured upload rate,
                               would not fit the spot warning: a warning would not save its work there

The last factor needs what the task's agent measured (`FinalCheckpoint`: image size, capture time,
the warning's budget) and what agents measured in the pool (its upload rate); without either, none.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# Spot Instance Advisor bands: share of instances interrupted per month (the band's middle; >20% as 30%).
BAND_MONTHLY_SHARE = (0.025, 0.075, 0.125, 0.175, 0.30)
BAND_LABELS = ("<5%", "5-10%", "10-15%", "15-20%", ">20%")
HOURS_PER_MONTH = 730.0


class ResourcesLike(Protocol):
    """What the broker reads of `spotrun.domain.spec.Resources`."""

    @property
    def vcpus(self) -> int: ...
    @property
    def memory_gib(self) -> float: ...
    @property
    def gpus(self) -> int: ...
    @property
    def instance_types(self) -> list[str]: ...
    @property
    def architecture(self) -> str: ...


@dataclass(frozen=True)
class Pool:
    """An instance type in an availability zone."""

    instance_type: str
    zone: str

    @property
    def key(self) -> str:
        return f"{self.instance_type}@{self.zone}"

    @property
    def family(self) -> str:
        return self.instance_type.split(".", 1)[0]


@dataclass(frozen=True)
class PoolState:
    """What spotrun knows of one pool right now."""

    pool: Pool
    vcpus: int
    memory_gib: float
    gpus: int
    architecture: str  # from the catalogue; "" when the type is not in it
    spot_price: float | None  # $/h now, None if unknown
    on_demand_price: float | None
    advisor_band: int | None  # 0..4 Spot Advisor interruption band
    executions: int = 0
    failures: int = 0
    interruptions: int = 0
    exec_seconds: float = 0.0  # total observed execution seconds in this pool
    running: int = 0
    cap: int = 50  # per-pool load cap
    cooldown_until: datetime | None = None
    advisor_savings: int | None = None  # percent below on-demand (Spot Advisor), for a price estimate
    upload_bytes_per_second: float | None = None  # checkpoint uploads measured by agents here; None unmeasured


@dataclass(frozen=True)
class FinalCheckpoint:
    """What a task's agent measured of its checkpoints: enough to predict its final one in any pool."""

    image_bytes: int
    capture_seconds: float
    budget_seconds: float  # the warning less the agent's margins
    streamed: bool = True  # parts upload while the capture runs (DMTCP)

    def predicted_seconds(self, upload_bytes_per_second: float) -> float:
        upload = self.image_bytes / max(upload_bytes_per_second, 1.0)
        return max(self.capture_seconds, upload) if self.streamed else self.capture_seconds + upload


@dataclass(frozen=True)
class PoolChoice:
    pool: Pool
    score: float  # expected $ per hour of useful work
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class BrokerDecision:
    choices: tuple[PoolChoice, ...]  # eligible pools, best first
    rejected: tuple[tuple[Pool, str], ...]  # pool, why not

    @property
    def best(self) -> PoolChoice | None:
        return self.choices[0] if self.choices else None

    def summary(self) -> str:
        """One line for the task's timeline."""
        if self.choices:
            best = self.choices[0]
            head = (f"{len(self.choices)} pool(s) eligible, best {best.pool.key} at ${best.score:.4f}/h of work "
                    f"({', '.join(best.reasons)})")
        else:
            head = "no eligible pool"
        if not self.rejected:
            return head
        kinds = Counter(reason.split(":", 1)[0] for _, reason in self.rejected)
        return f"{head}; {len(self.rejected)} rejected ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"


@dataclass(frozen=True)
class BrokerConfig:
    interruption_loss_hours: float = 0.25  # hours one interruption costs: change-over + work since checkpoint
    prior_exposure_hours: float = 10.0  # weight of the advisor band, in hours of observed execution
    hours_per_execution: float = 1.0  # exposure per execution when execution time is not recorded
    failure_prior_executions: float = 5.0  # failures are judged against this many clean executions too
    min_executions_for_speed: int = 3
    load_penalty: float = 0.5  # score factor at the cap: 1 + load_penalty
    default_savings: float = 0.6  # spot discount assumed when neither a price nor advisor savings is known
    default_band: int = 2
    unfit_final_penalty: float = 0.25  # score factor 1 + this where the final checkpoint would not fit the warning


DEFAULT_CONFIG = BrokerConfig()


def rank_pools(
    resources: ResourcesLike,
    states: Sequence[PoolState],
    now: datetime,
    config: BrokerConfig = DEFAULT_CONFIG,
    final: FinalCheckpoint | None = None,
) -> BrokerDecision:
    """Eligible pools best first (ties broken by pool key, so the order is stable), and the rest with why.

    `final`: the task's measured checkpoint, to prefer pools whose measured bandwidth makes its final
    checkpoint fit the warning."""
    eligible: list[PoolState] = []
    rejected: list[tuple[Pool, str]] = []
    for state in states:
        why = rejection(resources, state, now)
        if why:
            rejected.append((state.pool, why))
        else:
            eligible.append(state)
    typical = _typical_exec_seconds(eligible, config)
    choices = [_score(state, typical, config, final) for state in eligible]
    choices.sort(key=lambda c: (c.score, c.pool.key))
    return BrokerDecision(tuple(choices), tuple(rejected))


def rejection(resources: ResourcesLike, state: PoolState, now: datetime) -> str | None:
    """Why the pool cannot take the task now, or None. The text before ':' is the kind of rejection."""
    if not state.architecture or state.vcpus <= 0:
        return f"unknown type: {state.pool.instance_type} is not in the catalogue"
    if not type_allowed(state.pool.instance_type, resources.instance_types):
        return f"not allowed type: {state.pool.instance_type} is not in {', '.join(resources.instance_types)}"
    if state.architecture != resources.architecture:
        return f"wrong arch: {state.architecture}, the task needs {resources.architecture}"
    if state.vcpus < resources.vcpus:
        return f"too small: {state.vcpus} vCPUs < {resources.vcpus}"
    if state.memory_gib < resources.memory_gib:
        return f"too small: {state.memory_gib:g} GiB < {resources.memory_gib:g} GiB"
    if state.gpus < resources.gpus:
        return f"too small: {state.gpus} GPUs < {resources.gpus}"
    if state.running >= state.cap:
        return f"full: {state.running}/{state.cap} running"
    if state.cooldown_until is not None and now < state.cooldown_until:
        return f"cooling down: until {state.cooldown_until.isoformat(timespec='seconds')}"
    if state.spot_price is None and state.on_demand_price is None:
        return "no price: neither spot nor on-demand price known"
    return None


def type_allowed(instance_type: str, allowed: Sequence[str]) -> bool:
    """Allowed types are exact ('c6i.large'), families ('c6i') or size patterns ('c6i.*')."""
    if not allowed:
        return True
    family = instance_type.split(".", 1)[0]
    for entry in allowed:
        if entry in (instance_type, family):
            return True
        if "*" in entry and fnmatch.fnmatchcase(instance_type, entry):
            return True
    return False


def interruption_rate(state: PoolState, config: BrokerConfig = DEFAULT_CONFIG) -> float:
    """Interruptions per hour: observed ones over exposure, with the advisor band as a prior.

    A Gamma-Poisson posterior mean: the band counts as `prior_exposure_hours` of execution at its rate,
    so a few lucky or unlucky executions do not swing the estimate, and many of them dominate it.
    """
    band = state.advisor_band if state.advisor_band is not None else config.default_band
    band = min(max(band, 0), len(BAND_MONTHLY_SHARE) - 1)
    prior_rate = -math.log(1.0 - BAND_MONTHLY_SHARE[band]) / HOURS_PER_MONTH
    exposure = state.exec_seconds / 3600.0 if state.exec_seconds > 0 else state.executions * config.hours_per_execution
    return (state.interruptions + prior_rate * config.prior_exposure_hours) / (exposure + config.prior_exposure_hours)


def price_estimate(state: PoolState, config: BrokerConfig = DEFAULT_CONFIG) -> tuple[float, str]:
    if state.spot_price is not None:
        return state.spot_price, f"spot ${state.spot_price:.4g}/h"
    assert state.on_demand_price is not None  # rejection() saw to it
    if state.advisor_savings is not None:
        price = state.on_demand_price * (1 - state.advisor_savings / 100.0)
        return price, (f"spot ~${price:.4g}/h (on-demand ${state.on_demand_price:.4g}/h less "
                       f"{state.advisor_savings}% advisor savings)")
    price = state.on_demand_price * (1 - config.default_savings)
    return price, f"spot ~${price:.4g}/h (on-demand ${state.on_demand_price:.4g}/h less an assumed {config.default_savings:.0%})"


def _score(state: PoolState, typical: float | None, config: BrokerConfig,
           final: FinalCheckpoint | None = None) -> PoolChoice:
    price, price_reason = price_estimate(state, config)
    reasons = [price_reason]
    rate = interruption_rate(state, config)
    band = f"advisor band {BAND_LABELS[state.advisor_band]}" if state.advisor_band is not None else "no advisor band"
    if state.executions:
        reasons.append(f"interruptions {state.interruptions}/{state.executions} observed, {band}")
    else:
        reasons.append(f"no executions observed, {band}")
    factor = 1.0 + rate * config.interruption_loss_hours
    failure_ratio = min(0.9, state.failures / (state.executions + config.failure_prior_executions))
    if state.failures:
        reasons.append(f"failures {state.failures}/{state.executions}")
    factor /= 1.0 - failure_ratio
    if typical and state.executions >= config.min_executions_for_speed and state.exec_seconds > 0:
        mean = state.exec_seconds / state.executions
        speed = min(4.0, max(0.25, mean / typical))
        factor *= speed
        reasons.append(f"runs take {speed:.2f}x the typical pool ({mean / 60:.0f} min mean)")
    if state.running:
        load = min(1.0, state.running / max(state.cap, 1))
        factor *= 1.0 + config.load_penalty * load * load
        reasons.append(f"load {state.running}/{state.cap}")
    if final is not None and state.upload_bytes_per_second:
        predicted = final.predicted_seconds(state.upload_bytes_per_second)
        rate_said = f"{state.upload_bytes_per_second / 2**20:.0f} MiB/s measured"
        if predicted > final.budget_seconds:
            factor *= 1.0 + config.unfit_final_penalty
            reasons.append(f"final checkpoint would not fit the warning here (predicted {predicted:.0f} s "
                           f"> {final.budget_seconds:.0f} s at {rate_said})")
        else:
            reasons.append(f"final checkpoint fits the warning here (predicted {predicted:.0f} s at {rate_said})")
    return PoolChoice(state.pool, price * factor, tuple(reasons))


class MeasuredCheckpoint(Protocol):
    """What `final_checkpoint_of` reads of a task's pointer (spotrun.domain.model.Checkpoint)."""

    @property
    def size_bytes(self) -> int: ...
    @property
    def capture_bytes_per_second(self) -> float | None: ...
    @property
    def final_budget_seconds(self) -> float | None: ...
    @property
    def method(self) -> str: ...


# Checkpoint methods whose agent uploads parts while the capture runs (spotrun_worker.parts).
STREAMED_METHODS = frozenset({"dmtcp"})


def final_checkpoint_of(checkpoints: Sequence[MeasuredCheckpoint]) -> FinalCheckpoint | None:
    """The largest measured checkpoint among the tasks' pointers, as the broker weighs it; None unmeasured."""
    measured = [c for c in checkpoints if c.capture_bytes_per_second and c.final_budget_seconds is not None]
    if not measured:
        return None
    biggest = max(measured, key=lambda c: c.size_bytes)
    assert biggest.capture_bytes_per_second is not None and biggest.final_budget_seconds is not None
    return FinalCheckpoint(image_bytes=biggest.size_bytes,
                           capture_seconds=biggest.size_bytes / biggest.capture_bytes_per_second,
                           budget_seconds=biggest.final_budget_seconds, streamed=biggest.method in STREAMED_METHODS)


def _typical_exec_seconds(states: Sequence[PoolState], config: BrokerConfig) -> float | None:
    means = [s.exec_seconds / s.executions for s in states
             if s.executions >= config.min_executions_for_speed and s.exec_seconds > 0]
    return statistics.median(means) if means else None
