"""The broker: eligibility and ranking of pools, as tables, plus ordering invariants."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest

from spotrun.domain.broker import (
    BrokerDecision,
    FinalCheckpoint,
    Pool,
    PoolChoice,
    PoolState,
    final_checkpoint_of,
    interruption_rate,
    rank_pools,
    type_allowed,
)
from spotrun.domain.model import Checkpoint
from spotrun.domain.spec import Resources

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RESOURCES = Resources(vcpus=2, memory_gib=4)


def pool_state(instance_type: str = "c6i.large", zone: str = "us-east-1a", **overrides: object) -> PoolState:
    base = dict(
        pool=Pool(instance_type, zone), vcpus=2, memory_gib=4.0, gpus=0, architecture="x86_64",
        spot_price=0.04, on_demand_price=0.085, advisor_band=0,
    )
    base.update(overrides)
    return PoolState(**base)  # type: ignore[arg-type]


def test_given_a_pool_when_asking_its_key_then_it_is_type_at_zone():
    assert Pool("c6i.large", "us-east-1a").key == "c6i.large@us-east-1a"


@pytest.mark.parametrize(
    "given, resources, state, then_reason",
    [
        ("given a task needing 4 vCPUs", Resources(vcpus=4), pool_state(), "too small: 2 vCPUs < 4"),
        ("given a task needing 8 GiB", Resources(memory_gib=8), pool_state(), "too small: 4 GiB < 8 GiB"),
        ("given a task needing a GPU", Resources(gpus=1), pool_state(), "too small: 0 GPUs < 1"),
        ("given an arm64 task", Resources(architecture="arm64"), pool_state(), "wrong arch: x86_64, the task needs arm64"),
        ("given a task limited to m6i", Resources(instance_types=["m6i"]), pool_state(),
         "not allowed type: c6i.large is not in m6i"),
        ("given a full pool", Resources(), pool_state(running=50, cap=50), "full: 50/50 running"),
        ("given a pool cooling down", Resources(), pool_state(cooldown_until=NOW + timedelta(minutes=5)),
         "cooling down: until 2026-03-01T12:05:00+00:00"),
        ("given a type not in the catalogue", Resources(), pool_state(architecture="", vcpus=0),
         "unknown type: c6i.large is not in the catalogue"),
        ("given no price at all", Resources(), pool_state(spot_price=None, on_demand_price=None),
         "no price: neither spot nor on-demand price known"),
    ],
)
def test_given_an_unfit_pool_when_ranking_then_it_is_rejected_with_a_reason(given, resources, state, then_reason):
    decision = rank_pools(resources, [state], NOW)

    assert decision.choices == ()
    assert decision.rejected == ((state.pool, then_reason),), given


@pytest.mark.parametrize(
    "given, state",
    [
        ("given a cool-down that is over", pool_state(cooldown_until=NOW - timedelta(seconds=1))),
        ("given a pool one below its cap", pool_state(running=49, cap=50)),
        ("given a bigger instance than needed", pool_state(vcpus=16, memory_gib=64.0)),
    ],
)
def test_given_a_fit_pool_when_ranking_then_it_is_eligible(given, state):
    decision = rank_pools(Resources(vcpus=2, memory_gib=4), [state], NOW)

    assert [c.pool for c in decision.choices] == [state.pool], given


@pytest.mark.parametrize(
    "instance_type, allowed, then_allowed",
    [
        ("c6i.large", [], True),
        ("c6i.large", ["c6i.large"], True),
        ("c6i.large", ["c6i"], True),
        ("c6i.large", ["c6i.*"], True),
        ("c6i.large", ["c6i.x*"], False),
        ("c6in.large", ["c6i"], False),
        ("c6i.large", ["m6i", "c6i.xlarge"], False),
    ],
)
def test_given_allowed_types_when_checking_a_type_then_families_and_patterns_match(instance_type, allowed, then_allowed):
    assert type_allowed(instance_type, allowed) is then_allowed


@pytest.mark.parametrize(
    "given, better, worse",
    [
        ("given a cheaper spot price", pool_state(spot_price=0.03), pool_state("c6i.large", "us-east-1b", spot_price=0.05)),
        ("given fewer observed interruptions",
         pool_state(executions=20, interruptions=0, exec_seconds=20 * 3600),
         pool_state("c6i.large", "us-east-1b", executions=20, interruptions=10, exec_seconds=20 * 3600)),
        ("given fewer failures", pool_state(executions=20),
         pool_state("c6i.large", "us-east-1b", executions=20, failures=5)),
        ("given faster observed executions",
         pool_state(executions=10, exec_seconds=10 * 1800),
         pool_state("c6i.large", "us-east-1b", executions=10, exec_seconds=10 * 3600)),
        ("given a lighter load", pool_state(running=5, cap=50), pool_state("c6i.large", "us-east-1b", running=45, cap=50)),
        ("given a calmer advisor band and no observations", pool_state(advisor_band=0),
         pool_state("c6i.large", "us-east-1b", advisor_band=4)),
    ],
)
def test_given_two_pools_when_ranking_then_the_better_one_comes_first(given, better, worse):
    decision = rank_pools(Resources(), [worse, better], NOW)

    assert [c.pool for c in decision.choices] == [better.pool, worse.pool], given
    assert decision.choices[0].score < decision.choices[1].score


@pytest.mark.parametrize(
    "given, state, then_reason",
    [
        ("given a live spot price", pool_state(spot_price=0.42), "spot $0.42/h"),
        ("given observed interruptions", pool_state(executions=10, interruptions=2),
         "interruptions 2/10 observed, advisor band <5%"),
        ("given no observations", pool_state(advisor_band=3), "no executions observed, advisor band 15-20%"),
        ("given failures", pool_state(executions=10, failures=3), "failures 3/10"),
        ("given load", pool_state(running=10, cap=50), "load 10/50"),
        ("given only advisor savings", pool_state(spot_price=None, on_demand_price=1.0, advisor_savings=70),
         "spot ~$0.3/h (on-demand $1/h less 70% advisor savings)"),
    ],
)
def test_given_a_pool_when_ranking_then_reasons_are_human_readable(given, state, then_reason):
    decision = rank_pools(Resources(), [state], NOW)

    assert then_reason in decision.choices[0].reasons, given


def test_given_no_spot_price_when_scoring_then_the_estimate_uses_advisor_savings():
    state = pool_state(spot_price=None, on_demand_price=3.06, advisor_savings=70, advisor_band=None)

    choice = rank_pools(Resources(), [state], NOW).choices[0]

    assert choice.score == pytest.approx(3.06 * 0.30, rel=0.01)


def test_given_many_observations_when_estimating_interruptions_then_they_outweigh_the_band():
    quiet_band = pool_state(advisor_band=0, executions=1000, interruptions=500, exec_seconds=1000 * 3600)
    no_data = pool_state(advisor_band=0)

    assert interruption_rate(quiet_band) == pytest.approx(0.5, rel=0.02)
    assert interruption_rate(no_data) < 0.001


def test_given_a_mixed_decision_when_summarised_then_one_line_names_best_and_rejections():
    states = [pool_state(), pool_state("c6i.large", "us-east-1b", running=50), pool_state("m6g.large", architecture="arm64")]

    line = rank_pools(Resources(), states, NOW).summary()

    assert "\n" not in line
    assert line.startswith("1 pool(s) eligible, best c6i.large@us-east-1a")
    assert "2 rejected (1 full, 1 wrong arch)" in line


def test_given_nothing_eligible_when_summarised_then_it_says_so():
    assert BrokerDecision((), ()).summary() == "no eligible pool"
    assert BrokerDecision((PoolChoice(Pool("a.b", "z"), 1.0, ("x",)),), ()).best is not None


def test_given_random_pools_when_ranking_then_order_is_total_stable_and_partitioned():
    rng = random.Random(3)
    states = [
        pool_state(f"c6i.{size}", f"us-east-1{az}", vcpus=rng.choice([1, 2, 4, 8]), memory_gib=rng.choice([2.0, 4.0, 16.0]),
                   spot_price=rng.choice([None, 0.02, 0.04, 0.08]), running=rng.randint(0, 60), cap=50,
                   executions=rng.randint(0, 30), interruptions=rng.randint(0, 5), failures=rng.randint(0, 3),
                   exec_seconds=rng.uniform(0, 90_000), advisor_band=rng.choice([None, 0, 1, 2, 3, 4]))
        for size in ("large", "xlarge", "2xlarge") for az in "abcdef"
    ]
    resources = Resources(vcpus=2, memory_gib=4)

    decision = rank_pools(resources, states, NOW)
    again = rank_pools(resources, list(reversed(states)), NOW)

    scores = [c.score for c in decision.choices]
    assert scores == sorted(scores)
    assert decision.choices == again.choices
    assert len(decision.choices) + len(decision.rejected) == len(states)
    assert all(c.score > 0 and c.reasons for c in decision.choices)
    for state in states:
        mutated = dataclasses.replace(state, running=state.cap)
        assert rank_pools(resources, [mutated], NOW).choices == ()


# ------------------------------------------------ the final checkpoint and the pools' bandwidth

IMAGE = FinalCheckpoint(image_bytes=8 * 2**30, capture_seconds=25.0, budget_seconds=105.0)


def test_given_a_task_whose_final_checkpoint_fits_only_where_uploads_are_fast_then_that_pool_comes_first():
    # 8 GiB: 62 s at 131 MiB/s (fits 105 s), 164 s at 50 MiB/s (does not); same price, same everything else
    slow = pool_state(zone="us-east-1a", upload_bytes_per_second=50 * 2**20)
    fast = pool_state(zone="us-east-1b", upload_bytes_per_second=131 * 2**20)
    decision = rank_pools(RESOURCES, [slow, fast], NOW, final=IMAGE)
    assert [c.pool.zone for c in decision.choices] == ["us-east-1b", "us-east-1a"]
    assert decision.choices[1].score == pytest.approx(decision.choices[0].score * 1.25)
    assert "final checkpoint would not fit the warning here (predicted 164 s > 105 s at 50 MiB/s measured)" \
        in decision.choices[1].reasons
    assert "final checkpoint fits the warning here (predicted 63 s at 131 MiB/s measured)" in decision.choices[0].reasons
    # without a measured task (or a measured pool) the bandwidth weighs nothing: ties go by pool key
    assert [c.pool.zone for c in rank_pools(RESOURCES, [fast, slow], NOW).choices] == ["us-east-1a", "us-east-1b"]
    unmeasured = pool_state(zone="us-east-1a")
    assert rank_pools(RESOURCES, [unmeasured, fast], NOW, final=IMAGE).choices[0].pool.zone == "us-east-1a"


def test_given_tasks_pointers_then_the_largest_measured_checkpoint_is_weighed():
    at = datetime(2026, 12, 5, tzinfo=UTC)
    small = Checkpoint(1, "k", 1, 2**30, at, "dmtcp", capture_bytes_per_second=2**28, final_budget_seconds=105.0)
    big = Checkpoint(1, "k", 1, 4 * 2**30, at, "signal", capture_bytes_per_second=2**28, final_budget_seconds=105.0)
    unmeasured = Checkpoint(1, "k", 1, 64 * 2**30, at, "dmtcp")
    final = final_checkpoint_of([small, big, unmeasured])
    assert final == FinalCheckpoint(image_bytes=4 * 2**30, capture_seconds=16.0, budget_seconds=105.0, streamed=False)
    assert final.predicted_seconds(2**27) == 16.0 + 32.0  # not streamed: capture, then upload
    assert final_checkpoint_of([unmeasured]) is None
