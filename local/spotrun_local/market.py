"""The spot market, replayed from real traces (../shared/data/spot-traces/aws-v100-2023).

The traces record, every ~195 s for 7 weeks, whether one p3.2xlarge spot instance could be had in
each of 9 zones, and its price. Locally every instance type in a zone follows that zone's trace
(availability as recorded; price scaled by the type's on-demand price relative to p3.2xlarge's
$3.06/h), and time is compressed: one trace tick lasts `tick_seconds` of wall time.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TRACE_ON_DEMAND = 3.06  # p3.2xlarge, USD/h: the traces' instance
DEFAULT_TRACES = Path(os.environ.get(
    "SPOTRUN_TRACES",
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spot-traces" / "aws-v100-2023",
))

# Approximate us-east-1 on-demand list prices (USD/h) of the types the local runtime offers.
ON_DEMAND = {"c6i.large": 0.085, "m6i.large": 0.096, "c6a.large": 0.0765, "m6a.large": 0.0864, "r6i.large": 0.126}


@dataclass(frozen=True)
class Trace:
    zone: str
    available: tuple[bool, ...]
    price: tuple[float, ...]


def load_traces(directory: Path = DEFAULT_TRACES, zones: Sequence[str] | None = None) -> dict[str, Trace]:
    if not directory.is_dir():
        raise FileNotFoundError(f"spot traces not found at {directory} (expected ../shared/data beside the repo, or set SPOTRUN_TRACES)")
    prices = json.loads((directory / "v100_spot_prices.json").read_text())
    traces = {}
    for path in sorted(directory.glob("*_v100_1.csv")):
        zone = path.name.removesuffix("_v100_1.csv")
        if zones is not None and zone not in zones:
            continue
        with path.open() as handle:
            available = tuple(row["availability"] == "1" for row in csv.DictReader(handle))
        traces[zone] = Trace(zone, available, tuple(float(p) for p in prices[f"{zone}_v100_1"]))
    return traces


def pick_window(traces: dict[str, Trace], zones: Sequence[str], ticks: int, min_losses: int = 2) -> int:
    """A start tick where at least `min_losses` zones lose capacity within `ticks` while one stays up.

    The local demo must show interruptions; the window is chosen from the real data, not invented.
    """
    length = min(len(traces[z].available) for z in zones)
    for start in range(0, length - ticks):
        losses = 0
        for zone in zones:
            series = traces[zone].available[start:start + ticks]
            if series[0] and not all(series):
                losses += 1
        steady = any(all(traces[z].available[start:start + ticks]) for z in zones)
        if losses >= min_losses and steady:
            return start
    raise ValueError("no window in the traces has that many capacity losses")


def steady_window(traces: dict[str, Trace], zones: Sequence[str], ticks: int) -> int:
    """A start tick where every zone keeps its capacity for `ticks`: no market interruptions (tests and
    benchmarks that interrupt instances themselves, with `LocalRuntime.interrupt`)."""
    length = min(len(traces[z].available) for z in zones)
    for start in range(length - ticks):
        if all(all(traces[z].available[start:start + ticks]) for z in zones):
            return start
    raise ValueError(f"no window of {ticks} ticks in the traces where {', '.join(zones)} all keep capacity")


class MarketReplay:
    """Availability and price per pool at the replay's current tick."""

    def __init__(self, traces: dict[str, Trace], start_tick: int, tick_seconds: float,
                 clock: object = time.monotonic, started: float | None = None):
        """`started`: the `clock` reading at which the replay was at `start_tick` (default: now); a durable
        deployment passes its first start's wall time, so the market goes on across restarts."""
        self.traces = traces
        self.start_tick = start_tick
        self.tick_seconds = tick_seconds
        self._clock = clock
        self._started = clock() if started is None else started  # type: ignore[operator]

    @property
    def zones(self) -> list[str]:
        return sorted(self.traces)

    def tick(self) -> int:
        elapsed = self._clock() - self._started  # type: ignore[operator]
        return self.start_tick + int(elapsed / self.tick_seconds)

    def available(self, zone: str, tick: int | None = None) -> bool:
        trace = self.traces.get(zone)
        if trace is None:
            return False
        position = min(self.tick() if tick is None else tick, len(trace.available) - 1)
        return trace.available[position]

    def price(self, instance_type: str, zone: str, tick: int | None = None) -> float:
        trace = self.traces[zone]
        position = min(self.tick() if tick is None else tick, len(trace.price) - 1)
        return round(trace.price[position] * ON_DEMAND.get(instance_type, 0.1) / TRACE_ON_DEMAND, 5)

    def prices(self, instance_types: Sequence[str], now: object = None) -> dict[str, float]:
        return {f"{t}@{z}": self.price(t, z) for t in instance_types for z in self.zones if self.available(z)}

    def on_demand(self, instance_type: str) -> float:
        return ON_DEMAND.get(instance_type, 0.1)
