"""The market replay follows the real traces."""

from __future__ import annotations

import pytest

from spotrun_local.market import MarketReplay, load_traces, pick_window

ZONES = ("us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f")


@pytest.fixture(scope="module")
def traces():
    return load_traces(zones=ZONES)


class ManualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_traces_load_with_one_value_per_tick_for_each_zone(traces):
    assert set(traces) == set(ZONES)
    assert all(len(t.available) == len(t.price) == 20158 for t in traces.values())


def test_the_chosen_window_really_loses_capacity_in_two_zones_while_one_stays_up(traces):
    start = pick_window(traces, ZONES, ticks=45, min_losses=2)
    lost = [z for z in ZONES if traces[z].available[start] and not all(traces[z].available[start:start + 45])]
    steady = [z for z in ZONES if all(traces[z].available[start:start + 45])]
    assert len(lost) >= 2 and steady


def test_replayed_time_moves_through_the_trace_and_prices_scale_by_type(traces):
    clock = ManualClock()
    market = MarketReplay(traces, start_tick=100, tick_seconds=2.0, clock=clock)
    assert market.tick() == 100
    clock.now = 9.0
    assert market.tick() == 104
    zone = "us-east-1f"
    assert market.available(zone) == traces[zone].available[104]
    raw = traces[zone].price[104]
    assert market.price("c6i.large", zone) == pytest.approx(raw * 0.085 / 3.06, rel=1e-3)
    assert set(market.prices(["c6i.large"])) == {f"c6i.large@{z}" for z in ZONES if traces[z].available[104]}
