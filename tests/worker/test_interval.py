"""The adaptive checkpoint interval (Young/Daly), as a table."""

from __future__ import annotations

import math

import pytest

from spotrun_worker.interval import checkpoint_interval, daly_interval, mtbf_from_rate, young_interval


@pytest.mark.parametrize(("cost", "rate", "expected"), [
    (30.0, 1.0, math.sqrt(2 * 30 * 3600)),      # 1 interruption/hour, 30 s checkpoints: ~465 s
    (5.0, 0.1, math.sqrt(2 * 5 * 36000)),       # a quiet pool: 600 s
    (60.0, 0.05, math.sqrt(2 * 60 * 72000)),    # ~49 min
    (1.0, 60.0, 60.0),                          # 60/h would say 11 s: clamped up to the minimum
    (600.0, 0.001, 6 * 3600.0),                 # almost never interrupted: clamped down to 6 h
    (0.0, 1.0, 60.0),                           # nothing measured yet costs nothing: the minimum
    (10.0, 0.0, 6 * 3600.0),                    # never interrupted: the maximum
])
def test_young_interval_from_cost_and_rate(cost, rate, expected):
    assert checkpoint_interval(cost, interruptions_per_hour=rate) == pytest.approx(expected)


def test_the_interval_grows_with_the_cost_and_shrinks_with_the_rate():
    assert checkpoint_interval(40, interruptions_per_hour=0.5) > checkpoint_interval(10, interruptions_per_hour=0.5)
    assert checkpoint_interval(10, interruptions_per_hour=2.0) < checkpoint_interval(10, interruptions_per_hour=0.5)


def test_an_mtbf_can_be_given_instead_of_a_rate():
    assert checkpoint_interval(30, mtbf_seconds=3600) == checkpoint_interval(30, interruptions_per_hour=1.0)


def test_the_users_fixed_interval_wins_even_outside_the_bounds():
    assert checkpoint_interval(30, interruptions_per_hour=1.0, fixed=45) == 45.0
    assert checkpoint_interval(30, interruptions_per_hour=1.0, fixed=86_400) == 86_400.0


def test_custom_bounds():
    assert checkpoint_interval(1.0, interruptions_per_hour=60, minimum=5, maximum=100) == pytest.approx(math.sqrt(120))
    assert checkpoint_interval(1000, interruptions_per_hour=0.01, minimum=5, maximum=100) == 100


def test_daly_corrects_young_for_costly_checkpoints():
    cost, mtbf = 300.0, 3600.0
    ratio = cost / (2 * mtbf)
    expected = math.sqrt(2 * cost * mtbf) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - cost
    assert daly_interval(cost, mtbf) == pytest.approx(expected)
    assert daly_interval(cost, mtbf) < young_interval(cost, mtbf)
    assert daly_interval(8000, 3600) == 3600  # cost beyond 2 MTBF: checkpoint once per MTBF
    assert checkpoint_interval(cost, mtbf_seconds=mtbf, higher_order=True) == pytest.approx(expected)
    # For cheap checkpoints the two agree closely
    assert daly_interval(5, 36000) == pytest.approx(young_interval(5, 36000), rel=0.01)


@pytest.mark.parametrize("arguments", [
    {"cost_seconds": 10},                                             # neither rate nor MTBF
    {"cost_seconds": 10, "interruptions_per_hour": 1, "mtbf_seconds": 3600},
    {"cost_seconds": -1, "interruptions_per_hour": 1},
    {"cost_seconds": 10, "interruptions_per_hour": -1},
    {"cost_seconds": 10, "mtbf_seconds": 0},
    {"cost_seconds": 10, "interruptions_per_hour": 1, "minimum": 100, "maximum": 10},
    {"cost_seconds": 10, "interruptions_per_hour": 1, "fixed": 0},
])
def test_nonsense_is_refused(arguments):
    with pytest.raises(ValueError):
        checkpoint_interval(**arguments)


def test_rate_to_mtbf():
    assert mtbf_from_rate(2.0) == 1800.0
    assert math.isinf(mtbf_from_rate(0.0))
