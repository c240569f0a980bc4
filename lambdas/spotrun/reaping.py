"""The reaper's sweep: nothing in spotrun relies on a single event arriving.

Every minute it finds attempts whose heartbeats stopped (and asks EC2 before declaring them lost),
launches that never started (or whose launch call's answer was lost), tasks due to move off an instance
before its scheduled change, instances nobody owns, jobs past their timeout, and it reconciles
every open job, which also schedules work whose wake-up message was lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from spotrun.attempts import lose_attempt, move_due_tasks, release_combine_if_due
from spotrun.control import ControlPlane
from spotrun.domain.catalog import load_catalog
from spotrun.domain.interruptions import lost_instance
from spotrun.domain.launches import GONE
from spotrun.domain.lifecycle import last_sign_of_life
from spotrun.domain.model import Desired, JobState, Market, Task, TaskState
from spotrun.scheduling import ScheduleReport, reconcile_job, relaunch

log = logging.getLogger(__name__)

# A worker EC2 still calls running is only declared lost after this many stale periods: a slow
# network or a long checkpoint upload must not kill a healthy job (a known complaint elsewhere).
RUNNING_BUT_SILENT_FACTOR = 3
SWEEP_BUDGET_SECONDS = 200.0
STALE_BATCH = 500


@dataclass
class SweepReport:
    lost: list[str] = field(default_factory=list)
    stuck_launches: list[str] = field(default_factory=list)
    relaunched: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # off instances a scheduled change will take
    orphans: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    reconciled: int = 0
    # What the operators' dashboard graphs each minute: the open jobs' tasks per state, and what the
    # running attempts' instances cost per hour, per market, and what they would cost on demand.
    tasks_by_state: dict[str, int] = field(default_factory=dict)
    spend_per_hour: dict[str, float] = field(default_factory=dict)
    on_demand_equivalent_per_hour: float = 0.0
    interrupted_pools: dict[str, int] = field(default_factory=dict)  # reclaimed lost attempts, due moves
    launches: ScheduleReport = field(default_factory=ScheduleReport)  # the sweep's launches and refusals


def sweep(cp: ControlPlane, budget_seconds: float = SWEEP_BUDGET_SECONDS) -> SweepReport:
    started = time.monotonic()
    report = SweepReport()
    _find_lost_attempts(cp, report)
    report.moved = move_due_tasks(cp, report.launches, report.interrupted_pools)
    _stop_timed_out_jobs(cp, report)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.SUSPENDED):
        token = None
        while time.monotonic() - started < budget_seconds:
            jobs, token = cp.store.list_jobs([state], 100, token)
            for job in jobs:
                for task_state, count in job.counts.items():
                    report.tasks_by_state[task_state] = report.tasks_by_state.get(task_state, 0) + count
                reconcile_job(cp, job.job_id, report.launches)
                release_combine_if_due(cp, job)  # its release may have died with a finisher invocation
                report.reconciled += 1
            if not token:
                break
    _terminate_orphans(cp, report)
    return report


def _find_lost_attempts(cp: ControlPlane, report: SweepReport) -> None:
    now = cp.clock()
    heartbeat_cutoff = now - timedelta(seconds=cp.settings.heartbeat_stale_seconds)
    launch_cutoff = now - timedelta(seconds=cp.settings.launch_stale_seconds)
    relaunch_cutoff = now - timedelta(seconds=cp.settings.relaunch_seconds)
    # LAUNCHING tasks are keyed by launch time, RUNNING ones by their last heartbeat: take the latest cutoff.
    stale = cp.store.stale_live_tasks(max(heartbeat_cutoff, launch_cutoff, relaunch_cutoff), STALE_BATCH)
    candidates, unanswered = [], []
    for task in stale:
        launched_at = task.launched_at or now
        if task.state == TaskState.LAUNCHING and launched_at > launch_cutoff:
            if task.instance_id is None and task.launch_token and launched_at <= relaunch_cutoff:
                unanswered.append(task)  # its launch call's answer was lost: send it again, not wait
            continue  # still within its time to boot
        candidates.append(task)
    _relaunch(cp, unanswered, report)
    statuses = cp.compute.statuses([t.instance_id for t in candidates if t.instance_id])
    for task in candidates:
        label = f"{task.job_id}/{task.index}#{task.attempt}"
        status = statuses.get(task.instance_id, GONE) if task.instance_id else None
        alive = status is not None and status.alive
        if task.state == TaskState.LAUNCHING:
            signal = "instance never started the task" if task.instance_id else "launch never completed"
            reclaimed, reason = lost_instance(status, signal) if status is not None else (False, signal)
            if lose_attempt(cp, task, reason, reclaimed=reclaimed):
                report.stuck_launches.append(label)
                _count_reclaim(report, task, reclaimed)
            continue
        last = last_sign_of_life(task) or now
        silent_for = (now - last).total_seconds()
        if alive and silent_for < RUNNING_BUT_SILENT_FACTOR * cp.settings.heartbeat_stale_seconds:
            continue  # EC2 says it runs: give it more time before calling it lost
        signal = "heartbeats stopped and the instance is gone" if not alive else "heartbeats stopped"
        reclaimed, reason = lost_instance(status, signal) if status is not None else (False, signal)
        if lose_attempt(cp, task, reason, reclaimed=reclaimed):
            report.lost.append(label)
            _count_reclaim(report, task, reclaimed)


def _count_reclaim(report: SweepReport, task: Task, reclaimed: bool) -> None:
    """A lost attempt EC2 says was reclaimed is an interruption of its pool (one without a warning)."""
    if reclaimed and task.pool:
        report.interrupted_pools[task.pool] = report.interrupted_pools.get(task.pool, 0) + 1


def _relaunch(cp: ControlPlane, tasks: list[Task], report: SweepReport) -> None:
    """The same launch call again, with the same client token (`scheduling.relaunch`); one that fails is
    tried again at the next sweep, until the task's time to boot is over and it is lost as before."""
    if not tasks:
        return
    try:
        done = relaunch(cp, tasks, report.launches)
    except Exception:  # noqa: BLE001 - the sweep's other duties go on
        log.warning("relaunching %d tasks failed", len(tasks), exc_info=True)
        return
    report.relaunched += [f"{t.job_id}/{t.index}#{t.attempt}" for t in done]


def _stop_timed_out_jobs(cp: ControlPlane, report: SweepReport) -> None:
    now = cp.clock()
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.SUSPENDED):
        token = None
        while True:
            jobs, token = cp.store.list_jobs([state], 100, token)
            for job in jobs:
                timeout = job.spec.get("timeout")
                overdue = timeout and job.desired != Desired.CANCEL and (now - job.created_at).total_seconds() > timeout
                if overdue and cp.store.set_job_desired(job.job_id, Desired.CANCEL, [Desired.RUN, Desired.SUSPEND], now):
                    report.timed_out.append(job.job_id)
            if not token:
                break


def _terminate_orphans(cp: ControlPlane, report: SweepReport) -> None:
    """Instances spotrun launched that no current attempt owns (a crash between launch and record)."""
    now = cp.clock()
    orphans = []
    instances = cp.compute.managed_instances()
    # Two batched reads for all instances (their worker records, then those workers' tasks), not two per instance.
    workers = cp.store.workers([i["instance_id"] for i in instances])
    tasks = cp.store.tasks(list({(w.job_id, w.index) for w in workers.values()}))
    for instance in instances:
        launched = instance.get("launched_at")
        young = launched is not None and (now - launched).total_seconds() < cp.settings.launch_stale_seconds
        worker = workers.get(instance["instance_id"])
        if worker is None:
            if not young:
                orphans.append(instance["instance_id"])
            continue
        task = tasks.get((worker.job_id, worker.index))
        owner = task is not None and task.state in (TaskState.LAUNCHING, TaskState.RUNNING) and (
            task.attempt == worker.attempt or task.draining_attempt == worker.attempt
        )
        # An agent that just finished may be taking the job's next task (instance reuse): give it time.
        just_finished = task is not None and task.finished_at is not None and (
            now - task.finished_at).total_seconds() < cp.settings.launch_stale_seconds
        if not owner and not just_finished:
            orphans.append(instance["instance_id"])
        elif task is not None and owner and task.attempt == worker.attempt:
            _add_spend(report, task.market, task.price_per_hour, worker.pool)
    if orphans:
        cp.compute.terminate(orphans)
        report.orphans.extend(orphans)


def _add_spend(report: SweepReport, market: Market | None, price_per_hour: float | None, pool: str) -> None:
    """One running attempt's instance: what it costs per hour in its market, and on demand."""
    on_demand = load_catalog().on_demand_price(pool.split("@", 1)[0]) or 0.0
    key = (market or Market.SPOT).value
    paid = price_per_hour if price_per_hour is not None else (on_demand if key == Market.ON_DEMAND.value else 0.0)
    report.spend_per_hour[key] = round(report.spend_per_hour.get(key, 0.0) + paid, 6)
    report.on_demand_equivalent_per_hour = round(report.on_demand_equivalent_per_hour + on_demand, 6)
