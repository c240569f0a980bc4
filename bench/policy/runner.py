"""Running every policy over many start windows of the trace and summarising the results."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from bench.policy import optimum
from bench.policy.baselines import Greedy, OnDemandOnly, UniformProgress
from bench.policy.simulator import Job, RunResult, simulate
from bench.policy.traces import DEFAULT_DIR, Trace, load_trace, markets
from spotrun.domain.policy import DEFAULT_POLICY, DeadlinePolicy

# The Can't Be Late setting (48 h job, deadline at job fraction 0.8, 0.2 h change-over), a tighter and
# a looser deadline.
SETTINGS = {
    "paper (fraction 0.8, deadline 60 h)": 0.8,
    "tight (fraction 0.9, deadline 53.3 h)": 0.9,
    "loose (fraction 0.6, deadline 80 h)": 0.6,
}
JOB_HOURS = 48.0
CHANGEOVER_HOURS = 0.2

SINGLE = ("on-demand only", "greedy", "uniform progress", "spotrun single zone")
MULTI = ("spotrun all zones",)
OPT_SINGLE = "optimum single zone"
OPT_MULTI = "optimum all zones"


@dataclass(frozen=True)
class Config:
    stride_hours: float = 4.0
    workers: int = 2
    units_per_tick: int = 2
    traces: str = str(DEFAULT_DIR)
    policy: DeadlinePolicy = DEFAULT_POLICY


_TRACE: Trace | None = None
_MARKETS: list[list[Any]] | None = None
_ARRAYS: tuple[np.ndarray, np.ndarray] | None = None


def _load(directory: str) -> tuple[Trace, list[list[Any]], tuple[np.ndarray, np.ndarray]]:
    global _TRACE, _MARKETS, _ARRAYS
    if _TRACE is None:
        from pathlib import Path

        _TRACE = load_trace(Path(directory))
        _MARKETS = markets(_TRACE)
        _ARRAYS = (np.array(_TRACE.available, dtype=bool), np.array(_TRACE.prices, dtype=float))
    assert _MARKETS is not None and _ARRAYS is not None
    return _TRACE, _MARKETS, _ARRAYS


def windows(trace: Trace, deadline_hours: float, stride_hours: float) -> list[int]:
    span = math.ceil(deadline_hours / trace.tick_hours) + 1
    stride = max(1, round(stride_hours / trace.tick_hours))
    return list(range(0, trace.ticks - span, stride))


def run_window(args: tuple[str, float, int, int, DeadlinePolicy]) -> dict[str, list[RunResult]]:
    """All policies on one window; single-zone policies once per zone."""
    directory, fraction, start, units, policy = args
    trace, mk, (avail, prices) = _load(directory)
    job = Job(JOB_HOURS, JOB_HOURS / fraction, CHANGEOVER_HOURS)
    submitted = trace.time(start)
    deadline = submitted + timedelta(hours=job.deadline_hours)
    out: dict[str, list[RunResult]] = {name: [] for name in (*SINGLE, *MULTI, OPT_SINGLE, OPT_MULTI)}
    makers: dict[str, Callable[[], Any]] = {
        "greedy": Greedy,
        "uniform progress": lambda: UniformProgress(submitted, deadline, job.hours),
        "spotrun single zone": lambda: policy,
    }
    zones = list(range(len(trace.zones)))
    on_demand = simulate(OnDemandOnly(), trace, mk, [0], start, job)  # the same in every zone
    for z in zones:
        out["on-demand only"].append(on_demand)
        for name, make in makers.items():
            out[name].append(simulate(make(), trace, mk, [z], start, job))
    out["spotrun all zones"].append(simulate(policy, trace, mk, zones, start, job))
    span = math.ceil(job.deadline_hours / trace.tick_hours) + 1
    a, p = avail[:, start:start + span], prices[:, start:start + span]
    single = optimum.solve(a[:, None, :], p[:, None, :], trace.on_demand_price, trace.tick_hours, job.hours,
                           job.deadline_hours, job.changeover_hours, units)
    multi = optimum.solve(a[None], p[None], trace.on_demand_price, trace.tick_hours, job.hours,
                          job.deadline_hours, job.changeover_hours, units)
    for name, res in ((OPT_SINGLE, single), (OPT_MULTI, multi)):
        for b in range(len(res.cost)):
            out[name].append(RunResult(
                cost=float(res.cost[b]), spot_hours=float(res.spot_hours[b]),
                on_demand_hours=float(res.on_demand_hours[b]), starts=int(res.starts[b]),
                preemptions=int(res.preemptions[b]),
            ))
    return out


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def summarise(runs: list[RunResult]) -> dict[str, float]:
    costs = [r.cost for r in runs]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in {
        "runs": len(runs),
        "mean_cost": statistics.fmean(costs),
        "p90_cost": _p90(costs),
        "mean_spot_hours": statistics.fmean(r.spot_hours for r in runs),
        "mean_on_demand_hours": statistics.fmean(r.on_demand_hours for r in runs),
        "mean_changes": statistics.fmean(r.changes for r in runs),
        "mean_preemptions": statistics.fmean(r.preemptions for r in runs),
        "deadline_misses": sum(r.missed for r in runs),
    }.items()}


def run(config: Config, settings: Iterable[tuple[str, float]] | None = None,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    began = time.monotonic()
    trace, _, _ = _load(config.traces)
    report: dict[str, Any] = {
        "trace": {
            "zones": list(trace.zones), "ticks": trace.ticks, "tick_seconds": round(trace.tick_seconds, 2),
            "from": trace.time(0).isoformat(), "to": trace.time(trace.ticks - 1).isoformat(),
            "on_demand_price": trace.on_demand_price,
        },
        "job_hours": JOB_HOURS, "changeover_hours": CHANGEOVER_HOURS, "stride_hours": config.stride_hours,
        "optimum_units_per_tick": config.units_per_tick, "policy": _policy_params(config.policy),
        "settings": {},
    }
    pool = ProcessPoolExecutor(config.workers) if config.workers > 1 else None
    try:
        for label, fraction in settings or SETTINGS.items():
            deadline_hours = JOB_HOURS / fraction
            starts = windows(trace, deadline_hours, config.stride_hours)
            tasks = [(config.traces, fraction, s, config.units_per_tick, config.policy) for s in starts]
            mapped = pool.map(run_window, tasks, chunksize=4) if pool else map(run_window, tasks)
            merged: dict[str, list[RunResult]] = {}
            per_zone: dict[str, dict[str, list[float]]] = {}
            for result in mapped:
                for name, runs in result.items():
                    merged.setdefault(name, []).extend(runs)
                    if name in (*SINGLE, OPT_SINGLE):
                        for z, r in enumerate(runs):
                            per_zone.setdefault(name, {}).setdefault(trace.zones[z], []).append(r.cost)
            summary = {name: summarise(runs) for name, runs in merged.items()}
            for name, row in summary.items():
                ref = OPT_MULTI if name in (*MULTI, OPT_MULTI) else OPT_SINGLE
                row["optimum"] = ref
                row["ratio_to_optimum"] = round(row["mean_cost"] / summary[ref]["mean_cost"], 4)
                row["spot_hours_share_of_optimum"] = round(row["mean_spot_hours"] / summary[ref]["mean_spot_hours"], 4)
            report["settings"][label] = {
                "job_fraction": fraction, "deadline_hours": round(deadline_hours, 3), "windows": len(starts),
                "policies": summary,
                "single_zone_mean_cost_by_zone": {
                    name: {zone: round(statistics.fmean(costs), 2) for zone, costs in zones.items()}
                    for name, zones in per_zone.items()
                },
            }
            progress(f"{label}: {len(starts)} windows done at {time.monotonic() - began:.0f}s")
    finally:
        if pool:
            pool.shutdown()
    report["targets"] = targets(report)
    report["seconds"] = round(time.monotonic() - began, 1)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    misses = {
        label: {name: row["deadline_misses"] for name, row in s["policies"].items() if not name.startswith("optimum")}
        for label, s in report["settings"].items()
    }
    out["zero_misses_for_online_policies"] = all(v == 0 for m in misses.values() for v in m.values())
    paper = next((s for label, s in report["settings"].items() if s["job_fraction"] == 0.8), None)
    if paper:
        p = paper["policies"]
        ours, up = p["spotrun single zone"], p["uniform progress"]
        out["single_zone_mean_vs_uniform_progress"] = round(ours["mean_cost"] / up["mean_cost"], 4)
        out["single_zone_p90_vs_uniform_progress"] = round(ours["p90_cost"] / up["p90_cost"], 4)
        out["single_zone_met"] = ours["mean_cost"] < up["mean_cost"] and ours["p90_cost"] <= up["p90_cost"]
        out["all_zones_mean_vs_optimum"] = round(p["spotrun all zones"]["ratio_to_optimum"], 4)
        out["all_zones_met"] = p["spotrun all zones"]["ratio_to_optimum"] <= 1.10
    return out


def _policy_params(policy: DeadlinePolicy) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: ("inf" if v == math.inf else v) for k, v in asdict(policy).items()}


def table(report: dict[str, Any]) -> str:
    """The results as Markdown tables, one per setting."""
    lines: list[str] = []
    for label, setting in report["settings"].items():
        lines += [f"### {label}, {setting['windows']} windows", "",
                  "| policy | mean $ | p90 $ | spot h | on-demand h | changes | misses | mean / optimum |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in setting["policies"].items():
            lines.append(
                f"| {name} | {r['mean_cost']:.2f} | {r['p90_cost']:.2f} | {r['mean_spot_hours']:.1f} | "
                f"{r['mean_on_demand_hours']:.1f} | {r['mean_changes']:.1f} | {r['deadline_misses']} | "
                f"{r['ratio_to_optimum']:.3f} |"
            )
        lines.append("")
    t = report.get("targets", {})
    if t:
        lines.append(
            f"Targets: zero misses {t.get('zero_misses_for_online_policies')}; single zone vs Uniform Progress "
            f"mean {t.get('single_zone_mean_vs_uniform_progress')}, p90 {t.get('single_zone_p90_vs_uniform_progress')}; "
            f"all zones vs optimum {t.get('all_zones_mean_vs_optimum')}"
        )
    return "\n".join(lines)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
