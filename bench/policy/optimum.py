"""The offline optimum: a dynamic program that knows the whole future of the window (a lower bound).

State at the start of tick t: the instance alive (none, on-demand, spot in zone z) and the waste w,
the time so far that made no progress (idle ticks and change-overs), in units of 1/q tick. Progress is
t*q - w, so the deadline caps the waste at N*q - C and the table stays small (ticks x modes x slack).
A change-over is charged as waste when the instance starts; a run that ends inside its own
change-over is never worth starting, so charging it up front loses nothing for the optimum.

Rounding is towards the optimum (a true lower bound of the replay's semantics): the horizon is
rounded up to whole ticks, the work and the change-over down to whole units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IDLE, STAY, START = 0, 1, 2


@dataclass
class OptimumResult:
    cost: np.ndarray  # [batch]
    spot_hours: np.ndarray
    on_demand_hours: np.ndarray
    starts: np.ndarray
    preemptions: np.ndarray


def solve(
    available: np.ndarray,  # bool [batch, zones, ticks] from the window's first tick
    prices: np.ndarray,  # float [batch, zones, ticks], $/h
    on_demand_price: float,
    tick_hours: float,
    job_hours: float,
    deadline_hours: float,
    changeover_hours: float,
    units_per_tick: int = 2,
) -> OptimumResult:
    q = units_per_tick
    batch, zones, _ = available.shape
    n = math.ceil(deadline_hours / tick_hours - 1e-9)
    work = math.floor(job_hours / tick_hours * q + 1e-9)
    setup = math.floor(changeover_hours / tick_hours * q + 1e-9)
    max_waste = n * q - work
    if max_waste < 0:
        raise ValueError("the deadline is shorter than the job")
    width = max_waste + 1
    modes = zones + 2  # 0 none, 1 on-demand, 2+z spot in zone z
    w = np.arange(width)
    inf = np.inf
    value = np.zeros((batch, modes, width))
    choice = np.zeros((n, batch, modes, width), dtype=np.int8)
    run_prices = np.empty((batch, modes - 1))
    run_prices[:, 0] = on_demand_price * tick_hours
    blocked = np.zeros((batch, modes - 1), dtype=bool)
    start = np.full((batch, width), inf)
    idle = np.full((batch, width), inf)
    start_action = np.zeros((batch, width), dtype=np.int8)
    for t in range(n - 1, -1, -1):
        frac = np.clip((work - t * q + w) / q, 0.0, 1.0)
        run_prices[:, 1:] = prices[:, :, t] * tick_hours
        blocked[:, 1:] = ~available[:, :, t]
        # g[b, a, w]: run instance a through tick t having waste w after any change-over.
        g = run_prices[:, :, None] * frac + value[:, 1:, :]
        g[blocked] = inf
        best_action = g.argmin(axis=1)
        best = g.min(axis=1)
        if setup < width:
            start[:, : width - setup] = best[:, setup:]
            start_action[:, : width - setup] = best_action[:, setup:]
        if q < width:
            idle[:, : width - q] = value[:, 0, q:]
        base = np.minimum(idle, start)
        base_choice = np.where(idle <= start, IDLE, START + start_action).astype(np.int8)
        stay_better = g < base[:, None, :]
        value = np.empty_like(value)
        value[:, 0, :] = base
        value[:, 1:, :] = np.where(stay_better, g, base[:, None, :])
        choice[t, :, 0, :] = base_choice
        choice[t, :, 1:, :] = np.where(stay_better, STAY, base_choice[:, None, :])
        done = t * q - work
        if done >= 0:
            value[:, :, : done + 1] = 0.0
    return _replay(choice, available, prices, on_demand_price, tick_hours, q, work, setup, n, value)


def _replay(choice, available, prices, od_price, tick_hours, q, work, setup, n, value) -> OptimumResult:  # type: ignore[no-untyped-def]
    batch = choice.shape[1]
    cost = np.zeros(batch)
    spot = np.zeros(batch)
    od = np.zeros(batch)
    starts = np.zeros(batch, dtype=int)
    preempt = np.zeros(batch, dtype=int)
    for b in range(batch):
        mode, waste = 0, 0
        for t in range(n):
            if t * q - waste >= work:
                break
            if mode >= 2 and not available[b, mode - 2, t]:
                preempt[b] += 1
                mode = 0
            c = int(choice[t, b, mode, waste])
            if c == IDLE:
                mode = 0
                waste += q
                continue
            if c >= START:
                mode = c - START + 1
                waste += setup
                starts[b] += 1
            frac = min(1.0, max(0.0, (work - t * q + waste) / q))
            hours = tick_hours * frac
            if mode == 1:
                cost[b] += od_price * hours
                od[b] += hours
            else:
                cost[b] += prices[b, mode - 2, t] * hours
                spot[b] += hours
        if not math.isclose(cost[b], value[b, 0, 0], rel_tol=1e-6, abs_tol=1e-6):
            raise AssertionError(f"replay of the optimum costs {cost[b]}, the table says {value[b, 0, 0]}")
    return OptimumResult(cost, spot, od, starts, preempt)
