"""How often to checkpoint: Young's (optionally Daly's) optimum, from the measured checkpoint cost and
the pool's interruption rate.

With checkpoint cost C (seconds to capture and upload one) and mean time between interruptions M,
the work lost per interruption plus the time spent checkpointing is smallest near
`sqrt(2 C M)` (Young, 1974). Daly (2006) refines it for costs that are not small next to M:
`sqrt(2 C M) * (1 + sqrt(C / 2M) / 3 + (C / 2M) / 9) - C` while C < 2M, else M. The result is
clamped to [minimum, maximum]; a user's fixed interval wins over both.

Pure functions: the agent measures C and knows the pool's rate.
"""

from __future__ import annotations

import math

SECONDS_PER_HOUR = 3600.0
DEFAULT_MINIMUM_SECONDS = 60.0
DEFAULT_MAXIMUM_SECONDS = 6 * 3600.0


def mtbf_from_rate(interruptions_per_hour: float) -> float:
    """Mean seconds between interruptions; infinite when the pool is never interrupted."""
    if interruptions_per_hour < 0 or math.isnan(interruptions_per_hour):
        raise ValueError(f"interruption rate must be >= 0, not {interruptions_per_hour}")
    return math.inf if interruptions_per_hour == 0 else SECONDS_PER_HOUR / interruptions_per_hour


def young_interval(cost_seconds: float, mtbf_seconds: float) -> float:
    return math.sqrt(2.0 * cost_seconds * mtbf_seconds)


def daly_interval(cost_seconds: float, mtbf_seconds: float) -> float:
    if math.isinf(mtbf_seconds):
        return math.inf
    if cost_seconds >= 2.0 * mtbf_seconds:
        return mtbf_seconds
    ratio = cost_seconds / (2.0 * mtbf_seconds)
    return math.sqrt(2.0 * cost_seconds * mtbf_seconds) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - cost_seconds


def checkpoint_interval(cost_seconds: float, interruptions_per_hour: float | None = None,
                        mtbf_seconds: float | None = None, minimum: float = DEFAULT_MINIMUM_SECONDS,
                        maximum: float = DEFAULT_MAXIMUM_SECONDS, fixed: float | None = None,
                        higher_order: bool = False) -> float:
    """Seconds until the next checkpoint.

    Give the pool's `interruptions_per_hour` or its `mtbf_seconds` (exactly one). `fixed` (the user's
    own interval) is returned as is. `higher_order` uses Daly's correction instead of Young's formula.
    """
    if fixed is not None:
        if fixed <= 0 or math.isnan(fixed):
            raise ValueError(f"a fixed checkpoint interval must be > 0, not {fixed}")
        return float(fixed)
    if (interruptions_per_hour is None) == (mtbf_seconds is None):
        raise ValueError("give exactly one of interruptions_per_hour and mtbf_seconds")
    if cost_seconds < 0 or math.isnan(cost_seconds):
        raise ValueError(f"checkpoint cost must be >= 0, not {cost_seconds}")
    if minimum < 0 or maximum < minimum:
        raise ValueError(f"bad bounds: minimum {minimum}, maximum {maximum}")
    if mtbf_seconds is None:
        assert interruptions_per_hour is not None
        mtbf_seconds = mtbf_from_rate(interruptions_per_hour)
    elif mtbf_seconds <= 0 or math.isnan(mtbf_seconds):
        raise ValueError(f"MTBF must be > 0, not {mtbf_seconds}")
    best = daly_interval(cost_seconds, mtbf_seconds) if higher_order else young_interval(cost_seconds, mtbf_seconds)
    return min(maximum, max(minimum, best))
