"""The deadline policy: decisions as tables, and invariants over many random markets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from spotrun.domain.policy import (
    DEFAULT_POLICY,
    Action,
    DeadlinePolicy,
    DeadlineState,
    Decision,
    Placement,
    ZoneHistory,
    ZoneMarket,
    change_over_reserve,
    decide,
    expected_run_hours,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
OD = 3.06


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def zone(name: str = "us-east-1a", available: bool = True, price: float | None = 0.9, up: float = 5.0,
         down: float = 1.0, age: float = 0.0) -> ZoneMarket:
    return ZoneMarket(name, available, price, mean_up_hours=up, mean_down_hours=down, state_hours=age)


def state(left: float, work: float, zones: tuple[ZoneMarket, ...] = (), placement: Placement | None = None,
          changeover: float = 0.2, step: float = 0.05) -> DeadlineState:
    return DeadlineState(
        now=NOW, deadline=NOW + h(left), work_remaining=h(work), zones=zones or (zone(),), on_demand_price=OD,
        changeover=h(changeover), placement=placement, step=h(step),
    )


SPOT_A = Placement(Action.SPOT, "us-east-1a")
ON_DEMAND = Placement(Action.ON_DEMAND)


@pytest.mark.parametrize(
    "given, when_state, then_action, then_zone",
    [
        ("given lots of slack and spot available", state(60, 48), Action.SPOT, "us-east-1a"),
        ("given lots of slack and no spot", state(60, 48, (zone(available=False),)), Action.WAIT, None),
        ("given no slack left", state(48.2, 48, (zone(available=False),)), Action.ON_DEMAND, None),
        ("given no slack left even with spot available", state(48.25, 48), Action.ON_DEMAND, None),
        ("given on-demand near the deadline and spot back", state(48.3, 48, placement=ON_DEMAND), Action.ON_DEMAND, None),
        ("given running spot in an available zone", state(50, 40, placement=SPOT_A), Action.SPOT, "us-east-1a"),
        ("given slack below the reserve and no spot",
         state(49, 48, (zone(available=False, up=1.0, down=1.0),)), Action.ON_DEMAND, None),
        ("given on-demand and spot back for a while", state(58, 40, (zone(age=0.5),), placement=ON_DEMAND),
         Action.SPOT, "us-east-1a"),
        ("given on-demand and spot back a moment ago", state(58, 40, (zone(age=0.05),), placement=ON_DEMAND),
         Action.ON_DEMAND, None),
        ("given on-demand and spot that rarely lasts",
         state(58, 40, (zone(up=0.1, age=0.5, price=2.5),), placement=ON_DEMAND), Action.ON_DEMAND, None),
        ("given on-demand and no spot", state(58, 40, (zone(available=False),), placement=ON_DEMAND), Action.ON_DEMAND, None),
        ("given nothing left to do", state(10, 0), Action.WAIT, None),
    ],
)
def test_given_a_state_when_deciding_then_the_action_is_expected(given, when_state, then_action, then_zone):
    decision = decide(when_state)

    assert (decision.action, decision.zone) == (then_action, then_zone), f"{given}: {decision.reason}"
    assert decision.reason


def test_given_several_zones_when_starting_then_the_cheapest_per_useful_hour_wins():
    zones = (
        zone("us-east-1a", price=1.60, up=6.0),
        zone("us-west-2b", price=0.92, up=6.0),
        zone("us-east-2a", price=0.90, up=0.05),  # cheapest, but runs too short to pay for a change-over
        zone("us-east-2b", available=False, price=0.50),
    )

    decision = decide(state(60, 48, zones))

    assert (decision.action, decision.zone) == (Action.SPOT, "us-west-2b")


@pytest.mark.parametrize(
    "given, other_price, then_zone",
    [
        ("given a slightly cheaper zone elsewhere", 0.95, "us-east-1a"),
        ("given a much cheaper zone elsewhere with a long run", 0.50, "us-west-2a"),
    ],
)
def test_given_running_spot_when_another_zone_is_cheaper_then_it_moves_only_for_a_clear_gain(given, other_price, then_zone):
    zones = (zone("us-east-1a", price=1.0), zone("us-west-2a", price=other_price, up=20.0, age=5.0))

    decision = decide(state(60, 30, zones, placement=SPOT_A))

    assert decision.zone == then_zone, given


def test_given_the_spot_zone_went_away_when_deciding_then_it_never_picks_an_unavailable_zone():
    zones = (zone("us-east-1a", available=False), zone("us-east-1b", available=True, price=1.1))

    decision = decide(state(60, 40, zones, placement=SPOT_A))

    assert (decision.action, decision.zone) == (Action.SPOT, "us-east-1b")


def test_given_a_zone_without_price_when_deciding_then_it_is_not_chosen():
    decision = decide(state(60, 48, (zone(price=None),)))

    assert decision.action == Action.WAIT


def test_given_more_work_when_sizing_the_reserve_then_it_grows_with_the_work():
    zones = (zone(up=2.0, down=2.0),)

    small = change_over_reserve(DEFAULT_POLICY, zones, 10.0, 0.2)
    large = change_over_reserve(DEFAULT_POLICY, zones, 40.0, 0.2)

    assert 0 < small < large
    assert large == pytest.approx(4 * small)


def test_given_a_long_running_zone_when_estimating_its_run_then_age_lengthens_it():
    assert expected_run_hours(zone(up=2.0, age=0.0)) == 2.0
    assert expected_run_hours(zone(up=2.0, age=3.0)) == 5.0
    assert expected_run_hours(zone(available=False)) == 0.0


def test_given_alternating_observations_when_tracking_history_then_means_follow_the_runs():
    history = ZoneHistory("z", prior_runs=0.001)
    for _ in range(50):
        for _ in range(3):
            history = history.observe(True, 1.0)
        history = history.observe(False, 1.0)

    market = history.market(0.9)

    assert market.mean_up_hours == pytest.approx(3.0, rel=0.05)
    assert market.mean_down_hours == pytest.approx(1.0, rel=0.05)
    assert market.available is False and market.state_hours == pytest.approx(1.0)


def test_given_a_deadline_state_when_asking_feasibility_then_it_counts_the_change_over():
    assert state(48.2, 48).feasible()
    assert not state(48.1, 48).feasible()
    assert state(48.1, 48, placement=ON_DEMAND).feasible()


# ---------- invariants over random markets (property style, seeded) ----------


def _replay(policy: DeadlinePolicy, seed: int) -> tuple[bool, float, int]:
    """A tiny replay with random on/off zones: (met the deadline, cost, instance starts)."""
    rng = random.Random(seed)
    zones = rng.randint(1, 3)
    step = rng.choice([0.05, 0.1, 0.25])
    d = rng.choice([0.05, 0.2, 0.5])
    work = rng.uniform(2.0, 20.0)
    deadline = work + d + rng.uniform(0.0, work)
    up = [rng.uniform(0.2, 6.0) for _ in range(zones)]
    down = [rng.uniform(0.2, 6.0) for _ in range(zones)]
    avail = [rng.random() < 0.5 for _ in range(zones)]
    mode: object = None
    setup = elapsed = cost = 0.0
    starts = 0
    while work > 1e-9 and elapsed <= deadline + 1e-9:
        avail = [a if rng.random() > step / (up[i] if a else down[i]) else not a for i, a in enumerate(avail)]
        if isinstance(mode, int) and not avail[mode]:
            mode = None
        markets = tuple(zone(f"z{i}", avail[i], 1.0, up[i], down[i]) for i in range(zones))
        placement = None
        if mode == "od":
            placement = Placement(Action.ON_DEMAND, None, h(setup))
        elif isinstance(mode, int):
            placement = Placement(Action.SPOT, f"z{mode}", h(setup))
        decision: Decision = policy.decide(DeadlineState(
            NOW + h(elapsed), NOW + h(deadline), h(work), markets, OD, h(d), placement, h(step)))
        if decision.action == Action.SPOT:
            z = int(decision.zone[1:])  # type: ignore[index]
            assert avail[z], f"seed {seed}: chose unavailable {decision.zone}"
            if mode != z:
                mode, setup, starts = z, d, starts + 1
        elif decision.action == Action.ON_DEMAND:
            if mode != "od":
                mode, setup, starts = "od", d, starts + 1
        else:
            mode, setup = None, 0.0
        if mode is not None:
            spent = min(step, setup)
            setup -= spent
            progress = min(step - spent, work)
            work -= progress
            cost += (OD if mode == "od" else 1.0) * (spent + progress)
            elapsed += spent + progress if work <= 1e-9 else step
        else:
            elapsed += step
    return work <= 1e-9 and elapsed <= deadline + 1e-6, cost, starts


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, DeadlinePolicy(reserve_factor=0.0, margin_hours=0.0)])
def test_given_any_market_when_the_deadline_was_feasible_then_the_job_always_meets_it(policy):
    for seed in range(150):
        met, cost, _ = _replay(policy, seed)
        assert met, f"seed {seed} missed its deadline"
        assert cost > 0


def test_given_any_state_when_deciding_then_the_zone_is_available_and_priced():
    rng = random.Random(7)
    for _ in range(2_000):
        zones = tuple(zone(f"z{i}", rng.random() < 0.5, rng.choice([None, 0.5, 1.0, 2.0]),
                           rng.uniform(0.1, 10), rng.uniform(0.1, 10), rng.uniform(0, 5)) for i in range(3))
        placement = rng.choice([None, ON_DEMAND, Placement(Action.SPOT, "z0"), Placement(Action.SPOT, "z1")])
        work = rng.uniform(0, 50)
        decision = decide(state(work + rng.uniform(0, 20), work, zones, placement))
        if decision.action == Action.SPOT:
            chosen = next(m for m in zones if m.zone == decision.zone)
            staying = placement is not None and placement.zone == chosen.zone
            assert chosen.available and (staying or chosen.spot_price is not None)
        else:
            assert decision.zone is None
        # The guard: when too little slack would remain after one more step, only on-demand is safe.
        s = state(work + rng.uniform(0, 20), work, zones, placement)
        if work > 0 and s.slack_hours - s.step.total_seconds() / 3600 - DEFAULT_POLICY.margin_hours < 0:
            assert decide(s).action == Action.ON_DEMAND
