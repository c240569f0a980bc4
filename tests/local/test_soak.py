"""The chaos soak, short: two problems (`signal` and `none` checkpointers) on the local runtime while
every kind of fault is injected. Nothing may be lost, and every kind of fault must actually have
happened (so the test cannot pass by injecting nothing). `make soak` is the long run."""

from __future__ import annotations

import json

import pytest

from spotrun_local.soak import SoakOptions, run

pytestmark = pytest.mark.slow

# Every kind the soak injects (a market reclaim starts with its warning; whether the instance is still
# there to be reclaimed when the warning runs out depends on the other faults; a reclaim without any
# warning is injected by the chaos itself).
KINDS = (
    "market_interruption_warning", "agent_kill", "agent_kill_mid_checkpoint_upload",
    "rebalance_recommendation", "control_plane_crash", "reclaim_without_warning",
    "duplicate_delivery", "late_delivery", "out_of_order_batch", "heartbeat_dropped",
    "cp_crash_before_write", "cp_crash_after_write", "cp_transient_error", "cp_surfaced_error", "cp_lost_response",
    "agent_transient_error", "agent_lost_response",
)


def test_a_short_soak_loses_nothing_under_every_kind_of_fault(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = SoakOptions(
        seed=6, problems=2, tasks=2, steps=40, step_seconds=0.5, tick_seconds=1.5, budget_seconds=240,
        root=tmp_path / "soak", out=tmp_path / "soak.json", quiet=True,
        chaos={"agent_kill_every": 120.0, "rebalance_every": 8.0, "control_plane_crash_every": 90.0,
               "first_within": 25.0, "ensure_restore": True},
    )
    report = run(options)
    written = json.loads(options.out.read_text())
    assert written["runs"][0]["seed"] == 6 and written["ok"] == report["ok"]
    assert report["losses"] == [], json.dumps({k: report.get(k) for k in ("losses", "checks", "faults")}, indent=1)
    assert all(report["checks"].values()), report["checks"]
    missing = [kind for kind in KINDS if report["faults"].get(kind, 0) == 0]
    assert not missing, f"faults never injected: {missing}; injected: {report['faults']}"
    assert report["control_plane_generations"] >= 2
    assert report["tasks_total"] == 6
    # ensure_restore kills an agent whose task has a committed checkpoint: its replacement must restore it, so
    assert report["checkpoints"]["restored"] >= 1  # so "no partial checkpoint restored" was put to the test
