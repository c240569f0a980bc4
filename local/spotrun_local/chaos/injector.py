"""One seed drives every fault of a soak run.

`random.Random(seed)` is split, in a fixed order, into the generators of each fault source: the
choice of the market window, the schedule of timed faults (agent SIGKILLs, control plane crashes,
rebalance recommendations: drawn in full before the run starts, so they replay at the same offsets),
the control plane's per-call faults, each queue's delivery faults, and one seed per agent process
(`<seed>-<n>` for the n-th agent started). Replaying a seed replays the same schedule and the same
sequence of decisions per source; which call or message meets a decision still depends on thread and
process timing, so a replay reproduces the run's conditions, not every interleaving.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun_local.chaos.faults import FaultLog, FaultRates, ServiceFaults
from spotrun_local.chaos.queues import ChaosPump, QueueRates, Receipts

log = logging.getLogger("spotrun.chaos")
AGENT_SITE = Path(__file__).resolve().parent / "agent_site"


@dataclass
class ChaosConfig:
    seed: int
    # Per call / per write. A launch is ~10 writes and each crash on its path costs the task a launch timeout,
    # so the write faults are kept at a rate where problems still finish in about twice their fault-free time.
    cp: FaultRates = field(default_factory=lambda: FaultRates(
        transient=0.03, surfaced=0.003, lost_response=0.005, crash_before_write=0.005, crash_after_write=0.005))
    agent: FaultRates = field(default_factory=lambda: FaultRates(
        transient=0.03, surfaced=0.0, lost_response=0.005, kill_mid_checkpoint_upload=0.1, drop_beat=0.1))
    queues: QueueRates = field(default_factory=QueueRates)
    # Per live agent (so the last task of a run is not hit by the whole fleet's share):
    agent_kill_every: float = 300.0  # mean seconds between SIGKILLs (no warning) of each agent
    rebalance_every: float = 20.0  # mean seconds between rebalance recommendations (early checkpoints) to each instance
    # Mean seconds between spot reclaims of each spot instance with no warning before them (AWS calls the
    # warning best effort): terminated as Spot terminates, then only the state-change event.
    reclaim_without_warning_every: float = 400.0
    # For the whole control plane:
    control_plane_crash_every: float = 90.0  # mean seconds between control plane crashes
    control_plane_downtime: tuple[float, float] = (1.0, 5.0)
    first_within: float = 30.0  # each timed kind happens first within this many seconds (none is left out)
    # Per-call kinds are also injected once at their first chance (then only at their rates), so that a short run
    # exercises every kind; an agent is handed the kinds no agent has injected yet (at most one agent per 15 s;
    # per 10 s for the kill mid checkpoint upload, as not every agent serves a task that checkpoints).
    ensure_every_kind: bool = True
    # Kill (SIGKILL) the first agent seen whose task has a committed checkpoint, so the
    # run restores at least one checkpoint after a kill whatever the other faults did (the short soak needs it
    # to put "no partial checkpoint is ever restored" to the test).
    ensure_restore: bool = False


# The kind an agent's fault is counted as, where it is not agent_<rate name>.
_AGENT_KIND = {"transient": "agent_transient_error", "drop_beat": "heartbeat_dropped"}


@dataclass
class Timed:
    at: float
    kind: str
    pick: float


class Chaos:
    def __init__(self, config: ChaosConfig):
        self.config = config
        master = random.Random(config.seed)
        self.window_rng = random.Random(master.getrandbits(64))
        self.schedule_rng = random.Random(master.getrandbits(64))
        self.cp_rng = random.Random(master.getrandbits(64))
        self.queue_seed = master.getrandbits(64)
        self.log = FaultLog()
        self.receipts = Receipts()
        self.runtime: Any = None
        self.agent_logs: list[Path] = []
        self._agents = 0
        self.cp_ensure: set[str] = {name for name in FaultRates.RATES if getattr(config.cp, name) > 0
                                    and name != "kill_mid_checkpoint_upload"} if config.ensure_every_kind else set()
        self._agent_ensure_given: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[dict[str, Any]] = []

    # ---------------------------------------------------------- wiring

    def attach(self, runtime: Any) -> None:
        """Install the hooks on a runtime that has not started yet."""
        self.runtime = runtime
        runtime.session_hooks.append(self._control_plane_session)
        runtime.pump_wrapper = self._wrap_pump
        runtime.agent_env_hooks.append(self._agent_env)

    def _control_plane_session(self, session: Any, generation: Any) -> None:
        ServiceFaults("cp", self.cp_rng, self.log, self.config.cp, self.cp_ensure).install(session.events)

    def _wrap_pump(self, pump: Any, generation: Any) -> ChaosPump:
        rng = random.Random(f"{self.queue_seed}-{pump.name}-{generation.number}")
        return ChaosPump(pump, rng, self.log, self.config.queues, self.receipts, generation.number)

    def _agent_env(self, instance: Any, env: dict[str, str]) -> None:
        self._agents += 1
        home = self.runtime.options.root / "instances" / instance.instance_id
        path = (home / "chaos.jsonl").resolve()
        self.agent_logs.append(path)
        env["PYTHONPATH"] = os.pathsep.join([str(AGENT_SITE), env.get("PYTHONPATH", "")])
        env.update(self.config.agent.env())
        env["SPOTRUN_CHAOS_SEED"] = f"{self.config.seed}-{self._agents}"
        env["SPOTRUN_CHAOS_LOG"] = str(path)
        if self.config.ensure_every_kind:
            seen, now = self.agent_faults(), time.monotonic()
            owed = [name for name in ("transient", "lost_response", "kill_mid_checkpoint_upload", "drop_beat")
                    if getattr(self.config.agent, name) > 0 and not seen.get(_AGENT_KIND.get(name, f"agent_{name}"))
                    and now - self._agent_ensure_given.get(name, -1e9) > (
                        10.0 if name == "kill_mid_checkpoint_upload" else 15.0)]
            for name in owed:
                self._agent_ensure_given[name] = now
            env["SPOTRUN_CHAOS_ENSURE"] = ",".join(owed)
        if not self.config.agent.enabled:
            env.pop("SPOTRUN_CHAOS_SEED")

    # ---------------------------------------------------------- timed faults

    def schedule(self, duration: float) -> list[Timed]:
        """The control plane crashes, drawn in full before the run (they replay at the same offsets)."""
        rng, cfg = self.schedule_rng, self.config
        plan = []
        at = rng.uniform(min(5.0, cfg.first_within), cfg.first_within)
        while cfg.control_plane_crash_every > 0 and at < duration:
            plan.append(Timed(at, "control_plane_crash", rng.random()))
            at += rng.expovariate(1.0 / cfg.control_plane_crash_every)
        return plan

    def start(self, duration: float) -> None:
        """Every second: the control plane crashes that are due, then for each live agent (in instance-id
        order) a SIGKILL with probability 1/agent_kill_every, else a rebalance recommendation with
        probability 1/rebalance_every, else (a spot instance not warned yet) a reclaim without a warning
        with probability 1/reclaim_without_warning_every. A kind that has not happened within
        `first_within` seconds is forced on the next agent (for a kill or a reclaim: preferably one whose
        task has a committed checkpoint)."""
        crashes = self.schedule(duration)
        rng, cfg = random.Random(self.schedule_rng.getrandbits(64)), self.config
        started = time.monotonic()
        restore_forced = False

        def run() -> None:
            nonlocal restore_forced
            pending = list(crashes)
            while not self._stop.wait(1.0):
                elapsed = time.monotonic() - started
                while pending and pending[0].at <= elapsed:
                    self._fire(pending.pop(0), None)
                    if self._stop.is_set():
                        return
                agents = self._live_agents()
                for agent in agents:
                    kill, rebalance, reclaim = rng.random(), rng.random(), rng.random()
                    if cfg.agent_kill_every > 0 and kill < 1.0 / cfg.agent_kill_every:
                        self._fire(Timed(elapsed, "agent_kill", 0.0), agent)
                    elif cfg.rebalance_every > 0 and rebalance < 1.0 / cfg.rebalance_every:
                        self._fire(Timed(elapsed, "rebalance_recommendation", 0.0), agent)
                    elif (cfg.reclaim_without_warning_every > 0 and reclaim < 1.0 / cfg.reclaim_without_warning_every
                          and agent in self._spot_unwarned(agents)):
                        self._fire(Timed(elapsed, "reclaim_without_warning", 0.0), agent)
                if cfg.ensure_restore and not restore_forced and agents:
                    checkpointed = self._with_checkpoint(self._live_agents())
                    if checkpointed:
                        self._fire(Timed(elapsed, "agent_kill", 0.0), checkpointed[0])
                        restore_forced = True
                counts = self.log.snapshot()
                if agents and elapsed > cfg.first_within:
                    if not counts.get("agent_kill") and cfg.agent_kill_every > 0:
                        preferred = self._with_checkpoint(agents)
                        if preferred or elapsed > 2 * cfg.first_within:
                            self._fire(Timed(elapsed, "agent_kill", 0.0), (preferred or agents)[0])
                    if not counts.get("rebalance_recommendation") and cfg.rebalance_every > 0:
                        self._fire(Timed(elapsed, "rebalance_recommendation", 0.0), agents[0])
                    if not counts.get("reclaim_without_warning") and cfg.reclaim_without_warning_every > 0:
                        # every run has at least one, preferably of an instance whose task ran a while
                        candidates = self._spot_unwarned(self._with_checkpoint(agents)) or (
                            self._spot_unwarned(agents) if elapsed > 2 * cfg.first_within else [])
                        if candidates:
                            self._fire(Timed(elapsed, "reclaim_without_warning", 0.0), candidates[0])

        self._thread = threading.Thread(target=run, name="chaos", daemon=True)
        self._thread.start()

    def _live_agents(self) -> list[str]:
        return sorted(i.instance_id for i in list(self.runtime.instances.values())
                      if not i.killed and i.process is not None and i.process.poll() is None)

    def _fire(self, event: Timed, target: str | None) -> None:
        runtime = self.runtime
        try:
            if event.kind == "control_plane_crash":
                low, high = self.config.control_plane_downtime
                downtime = low + (high - low) * event.pick
                runtime.crash_control_plane()
                self.log.add("control_plane_crash")
                self._note(event, downtime=round(downtime, 2))
                if not self._stop.wait(downtime):
                    runtime.start_control_plane()
            elif event.kind == "reclaim_without_warning":
                runtime.reclaim(target)
                self.log.add("reclaim_without_warning", instance=target)
                self._note(event, instance=target)
            elif event.kind == "agent_kill":
                runtime.kill_agent(target)
                self.log.add("agent_kill", instance=target)
                self._note(event, instance=target)
            else:
                runtime._put_event("EC2 Instance Rebalance Recommendation", {"instance-id": target})
                self.log.add("rebalance_recommendation", instance=target)
                self._note(event, instance=target)
        except Exception:  # noqa: BLE001 - the injector must keep going
            log.exception("timed fault %s failed", event.kind)

    def _spot_unwarned(self, instance_ids: list[str]) -> list[str]:
        """The spot instances among these that the market has not warned yet (on-demand ones are never reclaimed)."""
        instances = self.runtime.instances
        return [i for i in instance_ids if instances[i].spot and instances[i].warned_at is None]

    def _with_checkpoint(self, instance_ids: list[str]) -> list[str]:
        from spotrun.adapters.dynamo import DynamoStore

        if not hasattr(self, "_store"):  # AWS as it is (not through the control plane's faulty clients)
            self._store = DynamoStore(self.runtime.session.client("dynamodb"), self.runtime.env["SPOTRUN_TABLE"])
        chosen = []
        for instance_id in instance_ids:
            worker = self._store.worker(instance_id)
            task = self._store.get_task(worker.job_id, worker.index) if worker else None
            if task is not None and task.checkpoint is not None and task.attempt == worker.attempt:
                chosen.append(instance_id)
        return chosen

    def _note(self, event: Timed, **detail: Any) -> None:
        self.events.append({"kind": event.kind, "planned_at": round(event.at, 2), "at": time.time(), **detail})

    # ---------------------------------------------------------- end

    def calm(self) -> None:
        """Stop injecting: the timed faults, the control plane's and the queues' faults, new agents' faults.
        (Agents already running keep their rates; their calls are retried like any transient error.)"""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.config.cp.enabled = False
        self.config.queues.enabled = False
        self.config.agent.enabled = False

    def agent_faults(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for path in self.agent_logs:
            try:
                lines = path.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                kind = record["kind"]
                counts[kind] = counts.get(kind, 0) + 1
                if kind == "agent_transient_error" and record.get("checkpoint"):
                    counts["agent_checkpoint_transfer_error"] = counts.get("agent_checkpoint_transfer_error", 0) + 1
        return counts

    def totals(self) -> dict[str, int]:
        totals = dict(self.log.snapshot())
        for kind, count in self.agent_faults().items():
            totals[kind] = totals.get(kind, 0) + count
        if self.runtime is not None:
            totals["market_interruption_warning"] = self.runtime.counters.warnings
            totals["market_reclaim"] = self.runtime.counters.reclaims
        return dict(sorted(totals.items()))
