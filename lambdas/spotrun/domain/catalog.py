"""The instance catalogue: sizes of instance types, Spot Advisor advice per region, on-demand prices.

The data ships inside the package (`spotrun/data/catalog.json`, extracted from the Spot Instance
Advisor feed by `bench/tools/make_catalog.py`), because a Lambda function cannot read anything
outside its bundle. Parsing is pure (`Catalog.from_document`); `load_catalog` only reads that one
bundled file, once per process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from spotrun.domain.broker import Pool, PoolState

CATALOG_PATH = Path(__file__).resolve().parent.parent / "data" / "catalog.json"

# Approximate on-demand list prices, Linux, us-east-1, $/hour, as published on AWS's EC2 pricing
# pages (rounded; other regions are typically 0-20% dearer). They are estimates for ranking and for
# a spot price when no live one is known (spot ~ on-demand x (1 - advisor savings)), never for billing.
# GPU types are listed one by one (their prices are not proportional to size).
ON_DEMAND_PRICES = {
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48, "p3dn.24xlarge": 31.212,
    "p4d.24xlarge": 32.7726, "p5.48xlarge": 98.32,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672, "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144,
    "g6.12xlarge": 4.6016, "g6.16xlarge": 3.3968, "g6.24xlarge": 6.6752, "g6.48xlarge": 13.3504,
}
# Families whose price is proportional to size: $ per vCPU-hour (the .large price / 2), us-east-1.
ON_DEMAND_PER_VCPU = {
    "t3": 0.0416, "t3a": 0.0376, "t4g": 0.0336,
    "m5": 0.048, "m5a": 0.043, "m6i": 0.048, "m6a": 0.0432, "m7i": 0.0504, "m7a": 0.05796,
    "m6g": 0.0385, "m7g": 0.0408,
    "c5": 0.0425, "c5a": 0.0385, "c6i": 0.0425, "c6a": 0.0383, "c7i": 0.04463, "c7a": 0.05131,
    "c6g": 0.034, "c7g": 0.03625,
    "r5": 0.063, "r5a": 0.0565, "r6i": 0.063, "r6a": 0.0567, "r7i": 0.06615, "r7a": 0.07608,
    "r6g": 0.0504, "r7g": 0.05355,
}


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int
    architecture: str

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class SpotAdvice:
    savings_percent: int  # below on-demand
    band: int  # interruption frequency band 0..4 (<5%, 5-10%, 10-15%, 15-20%, >20% per month)


class StatsLike(Protocol):
    """What `pool_state` reads of spotrun's per-pool statistics (spotrun.domain.model.PoolStats)."""

    @property
    def executions(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def interruptions(self) -> int: ...
    @property
    def exec_seconds(self) -> float: ...
    @property
    def upload_bytes(self) -> float: ...
    @property
    def upload_seconds(self) -> float: ...
    @property
    def running(self) -> int: ...
    @property
    def cooldown_until(self) -> datetime | None: ...


_ZONE = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)[a-z]$")


def region_of(zone: str) -> str:
    """'us-east-1a' -> 'us-east-1' (a region passes through unchanged)."""
    match = _ZONE.match(zone)
    return match.group(1) if match else zone


@dataclass(frozen=True)
class Catalog:
    types: Mapping[str, InstanceType]
    advice: Mapping[str, Mapping[str, SpotAdvice]]  # region -> type -> advice
    bands: tuple[str, ...]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Catalog:
        types = {
            name: InstanceType(name, int(row[0]), float(row[1]), int(row[2]), str(row[3]))
            for name, row in document["types"].items()
        }
        advice = {
            region: {name: SpotAdvice(int(v[0]), int(v[1])) for name, v in rows.items()}
            for region, rows in document["regions"].items()
        }
        bands = tuple(b["label"] for b in document.get("bands", []))
        return cls(types, advice, bands)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.advice))

    def instance(self, name: str) -> InstanceType | None:
        return self.types.get(name)

    def spot_advice(self, region: str, name: str) -> SpotAdvice | None:
        return self.advice.get(region_of(region), {}).get(name)

    def on_demand_price(self, name: str) -> float | None:
        """Approximate on-demand $/h (us-east-1 list price), None when spotrun has no estimate."""
        if name in ON_DEMAND_PRICES:
            return ON_DEMAND_PRICES[name]
        spec = self.types.get(name)
        rate = ON_DEMAND_PER_VCPU.get(name.split(".", 1)[0])
        if spec is None or rate is None:
            return None
        return round(rate * spec.vcpus, 5)

    def estimated_spot_price(self, region: str, name: str) -> float | None:
        """Spot $/h from the on-demand price and the advisor's savings, when no live price is known."""
        od = self.on_demand_price(name)
        advice = self.spot_advice(region, name)
        if od is None or advice is None:
            return None
        return od * (1 - advice.savings_percent / 100.0)

    def matching(self, vcpus: int = 1, memory_gib: float = 0.0, gpus: int = 0,
                 architecture: str | None = None) -> Iterator[InstanceType]:
        """Types at least this big, smallest first (vCPUs, then memory)."""
        found = [
            t for t in self.types.values()
            if t.vcpus >= vcpus and t.memory_gib >= memory_gib and t.gpus >= gpus
            and (architecture is None or t.architecture == architecture)
        ]
        yield from sorted(found, key=lambda t: (t.vcpus, t.memory_gib, t.gpus, t.name))


@lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """The bundled catalogue (read once per process)."""
    return Catalog.from_document(json.loads(path.read_text()))


def pool_state(
    pool: Pool,
    region: str,
    stats: StatsLike | None = None,
    spot_price: float | None = None,
    *,
    cap: int = 50,
    catalog: Catalog | None = None,
) -> PoolState:
    """The broker's view of a pool: the catalogue's sizes and advice, the live price, spotrun's statistics.

    A type missing from the catalogue gets zero sizes and no architecture; the broker rejects it
    with "unknown type". `region` is the deployment's; the pool's zone wins when it names another.
    """
    catalog = catalog or load_catalog()
    spec = catalog.instance(pool.instance_type)
    advice = catalog.spot_advice(region_of(pool.zone) if _ZONE.match(pool.zone) else region, pool.instance_type)
    return PoolState(
        pool=pool,
        vcpus=spec.vcpus if spec else 0,
        memory_gib=spec.memory_gib if spec else 0.0,
        gpus=spec.gpus if spec else 0,
        architecture=spec.architecture if spec else "",
        spot_price=spot_price,
        on_demand_price=catalog.on_demand_price(pool.instance_type),
        advisor_band=advice.band if advice else None,
        advisor_savings=advice.savings_percent if advice else None,
        executions=stats.executions if stats else 0,
        failures=stats.failures if stats else 0,
        interruptions=stats.interruptions if stats else 0,
        exec_seconds=stats.exec_seconds if stats else 0.0,
        running=stats.running if stats else 0,
        cap=cap,
        cooldown_until=stats.cooldown_until if stats else None,
        upload_bytes_per_second=(stats.upload_bytes / stats.upload_seconds
                                 if stats and stats.upload_seconds > 0 and stats.upload_bytes > 0 else None),
    )
