"""Loading the real spot traces (p3.2xlarge, 9 AWS zones, 2023) and what an online policy may know of them."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from spotrun.domain.policy import ZoneHistory, ZoneMarket

DEFAULT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "spot-traces" / "aws-v100-2023"
ON_DEMAND_PRICE = 3.06  # p3.2xlarge, us-east-1, $/h


@dataclass
class Trace:
    zones: tuple[str, ...]
    start: datetime
    tick_seconds: float  # the probes are ~195 s apart; the replay uses their mean spacing as the tick
    available: list[list[bool]]  # [zone][tick]
    prices: list[list[float]]  # [zone][tick], $/h
    on_demand_price: float = ON_DEMAND_PRICE

    @property
    def ticks(self) -> int:
        return len(self.available[0])

    @property
    def tick_hours(self) -> float:
        return self.tick_seconds / 3600.0

    def time(self, tick: int) -> datetime:
        return self.start + timedelta(seconds=tick * self.tick_seconds)


def load_trace(directory: Path = DEFAULT_DIR) -> Trace:
    prices = json.loads((directory / "v100_spot_prices.json").read_text())
    zones = tuple(sorted(name.removesuffix("_v100_1") for name in prices))
    available: list[list[bool]] = []
    stamps: list[str] = []
    for zone in zones:
        with (directory / f"{zone}_v100_1.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        if not stamps:
            stamps = [row["date"] for row in rows]
        available.append([row["availability"].strip() == "1" for row in rows])
    first = datetime.fromisoformat(stamps[0]).replace(tzinfo=UTC)
    last = datetime.fromisoformat(stamps[-1]).replace(tzinfo=UTC)
    tick = (last - first).total_seconds() / (len(stamps) - 1)
    series = [[float(x) for x in prices[f"{zone}_v100_1"]] for zone in zones]
    lengths = {len(a) for a in available} | {len(p) for p in series}
    if len(lengths) != 1:
        raise ValueError(f"traces are not aligned: lengths {sorted(lengths)}")
    return Trace(zones, first, tick, available, series)


def markets(trace: Trace, half_life_hours: float = 168.0) -> list[list[ZoneMarket]]:
    """[zone][tick] -> what an online observer knows at that tick (only the past and the present)."""
    out: list[list[ZoneMarket]] = []
    hours = trace.tick_hours
    for z, zone in enumerate(trace.zones):
        history = ZoneHistory(zone, half_life_hours=half_life_hours)
        row: list[ZoneMarket] = []
        for t in range(trace.ticks):
            history = history.observe(trace.available[z][t], hours)
            row.append(history.market(trace.prices[z][t]))
        out.append(row)
    return out
