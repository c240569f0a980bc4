"""How the soak's faults are wired: one seed's chaos (`spotrun_local.chaos`) attached to a local runtime
whose timings let faults bite within minutes, over a window of the real spot traces where zones keep
losing capacity (so the market itself interrupts instances, on top of the injected faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chaos(seed: int, overrides: dict[str, Any]) -> Any:
    """The injector of one seed, with `overrides` set on its `ChaosConfig` (tests shorten the schedules)."""
    from spotrun_local.chaos.injector import Chaos, ChaosConfig

    config = ChaosConfig(seed=seed)
    for key, value in overrides.items():
        setattr(config, key, value)
    return Chaos(config)


def chaotic_runtime(injector: Any, root: Path, tick_seconds: float, expected_seconds: float) -> tuple[Any, dict[str, int]]:
    """A local runtime (not started) with `injector` attached, replaying a window of the traces about twice
    as long as the run is expected to take. Returns it and the window (start tick, ticks, capacity losses)."""
    from spotrun_local.market import MarketReplay, load_traces
    from spotrun_local.runtime import LocalRuntime, RuntimeOptions

    options = RuntimeOptions(
        root=root, tick_seconds=tick_seconds, warning_seconds=8.0, heartbeat_seconds=1.5,
        reaper_seconds=3.0, heartbeat_stale_seconds=6, launch_stale_seconds=30, relaunch_seconds=8,
        cooldown_seconds=30,
        account_max_instances=10, pool_max_instances=5, visibility_timeout_seconds=5,
    )
    traces = load_traces(zones=options.zones)
    ticks = int(max(expected_seconds * 2, 120) / tick_seconds)
    options.start_tick, losses = chaos_window(traces, options.zones, ticks, injector.window_rng, tick_seconds)
    runtime = LocalRuntime(MarketReplay(traces, options.start_tick, tick_seconds), options)
    injector.attach(runtime)
    return runtime, {"start_tick": options.start_tick, "ticks": ticks, "capacity_losses": losses}


def chaos_window(traces: dict[str, Any], zones: tuple[str, ...], ticks: int, rng: Any, tick_seconds: float,
                 min_up: int = 2, choices: int = 8) -> tuple[int, int]:
    """A start tick of the real traces where zones keep losing capacity while at least `min_up` zones stay
    up at every tick. Windows are ranked by how many distinct zones lose capacity between 8 s and 40 s
    into the run (when the first instances are up: whatever pools they got, some are hit), then by the
    losses in the whole window; the seed picks one of the `choices` best (far enough apart).
    Returns (start, losses in the window)."""
    length = min(len(traces[z].available) for z in zones)
    up = [sum(traces[z].available[t] for z in zones) for t in range(length)]
    lost = [[0] * length for _ in zones]
    for k, zone in enumerate(zones):
        series = traces[zone].available
        for t in range(1, length):
            lost[k][t] = int(series[t - 1] and not series[t])
    total = [sum(lost[k][t] for k in range(len(zones))) for t in range(length)]
    bad_prefix, loss_prefix = [0], [0]
    zone_prefix = [[0] for _ in zones]
    for t in range(length):
        bad_prefix.append(bad_prefix[-1] + (up[t] < min_up))
        loss_prefix.append(loss_prefix[-1] + total[t])
        for k in range(len(zones)):
            zone_prefix[k].append(zone_prefix[k][-1] + lost[k][t])
    early_from, early_to = max(1, int(8 / tick_seconds)), max(2, int(40 / tick_seconds))
    candidates = []
    for start in range(length - max(ticks, early_to)):
        if bad_prefix[start + ticks] - bad_prefix[start]:
            continue
        early = sum(1 for k in range(len(zones))
                    if zone_prefix[k][start + early_to] - zone_prefix[k][start + early_from] > 0)
        if early == 0:
            continue
        candidates.append((early, loss_prefix[start + ticks] - loss_prefix[start + 1], start))
    candidates.sort(reverse=True)
    picked: list[tuple[int, int, int]] = []
    for candidate in candidates:
        if all(abs(candidate[2] - other[2]) >= ticks // 2 for other in picked):
            picked.append(candidate)
        if len(picked) == choices:
            break
    if not picked:
        raise ValueError("no window of the traces has frequent capacity losses")
    _, losses, start = rng.choice(picked)
    return start, losses
