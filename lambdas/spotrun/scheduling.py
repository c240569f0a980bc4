"""Carrying out a job's desired state: admit queued tasks within the caps and launch them per pool,
replace interrupted workers at once, and carry out cancel, suspend and resume.

`reconcile_job` is idempotent and safe to run concurrently: every move is a guarded write, so two
runs racing for the same task cannot both win, and a run that crashed half-way is finished by the
next one (the next message or the reaper's sweep).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spotrun import sweeps
from spotrun.bookkeeping import refresh_state
from spotrun.control import ControlPlane
from spotrun.domain import broker, catalog, policy
from spotrun.domain.accounting import job_statistics
from spotrun.domain.launches import CAPACITY_ERRORS, LaunchRequest, client_token
from spotrun.domain.lifecycle import INTERRUPTED, LAUNCH_REFUSED, AttemptEnd, TaskChange, ended, run_seconds
from spotrun.domain.model import (
    ACTIVE_STATES,
    FINISHED_JOB_STATES,
    TERMINAL_STATES,
    Desired,
    Job,
    Market,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
    task_instances,
)
from spotrun.domain.spec import JobSpec, from_stored
from spotrun.images import fail_for_image, standing_fault

log = logging.getLogger(__name__)

# Tasks per guarded transaction: each task is 2-3 items and a transaction holds at most 100.
ADMISSION_CHUNK = 25
# Upper bound of tasks one scheduler invocation admits (the rest on the next message or sweep).
MAX_ADMIT_PER_RUN = 2_000
# The launch of a gang gave fewer instances than its nodes: it is undone, the next pool is tried.
GANG_SHORT = "GangIncomplete"
# After this many environment faults in a row a task is moved to on-demand capacity.
ON_DEMAND_AFTER_FAULTS = 3


@dataclass
class ScheduleReport:
    admitted: int = 0
    launched: int = 0
    launch_calls: int = 0
    failed_pools: dict[str, str] = field(default_factory=dict)
    launched_by_pool: dict[str, int] = field(default_factory=dict)  # instances launched, per pool
    refused_by_pool: dict[str, int] = field(default_factory=dict)  # launch calls refused for capacity, per pool
    cancelled: int = 0
    suspended: int = 0
    resumed: int = 0
    terminated: list[str] = field(default_factory=list)
    failed_for_image: int = 0  # queued tasks failed at admission: the worker image cannot run them


def reconcile_job(
    cp: ControlPlane, job_id: str, report: ScheduleReport | None = None, cancelled: Sequence[int] = (),
) -> ScheduleReport:
    """Bring a job's tasks in line with what the user wants (run, suspend or cancel).

    `cancelled` names tasks the user cancelled one by one (the control message carries them). A
    cancel mark whose message was lost is still carried out without searching for it: a queued task
    is cancelled when the scheduler meets it, a suspended one when the job resumes, a running one by
    its agent (which reads its desired state every control poll).
    """
    report = report or ScheduleReport()
    job = cp.store.get_job(job_id)
    if job is None or job.state in FINISHED_JOB_STATES:
        return report
    if job.desired == Desired.CANCEL:
        _stop_tasks(cp, job, TaskState.CANCELLED, "TaskCancelled", "cancelled by the user", report)
    elif job.desired == Desired.SUSPEND:
        _stop_tasks(cp, job, TaskState.SUSPENDED, "TaskSuspended", "suspended by the user", report)
    else:
        if job.counts.get(TaskState.SUSPENDED, 0) > 0:  # the counts say whether a query would find any
            _resume_tasks(cp, job, report)
        _cancel_single_tasks(cp, job, report, cancelled)
        schedule_queued(cp, job, report)
    refresh_state(cp, job_id)
    return report


def schedule_queued(cp: ControlPlane, job: Job, report: ScheduleReport) -> None:
    spec = from_stored(job.spec)
    job = cp.store.get_job(job.job_id) or job
    room_in_job = spec.max_concurrency - job.active
    room_in_account = cp.settings.account_max_instances - cp.store.account_active()
    slots = min(room_in_job, room_in_account, MAX_ADMIT_PER_RUN)
    if slots <= 0:
        return
    queued = cp.store.tasks_in_state(job.job_id, TaskState.QUEUED, slots)
    if len(queued) < slots and job.pending > 0:  # a big sweep: store its next tasks as they are admitted
        queued += sweeps.materialize(cp, job, slots - len(queued))
    if any(t.desired == Desired.CANCEL for t in queued):  # cancelled while queued: finish them off now
        _cancel(cp, [t for t in queued if t.desired == Desired.CANCEL], report)
        queued = [t for t in queued if t.desired != Desired.CANCEL]
    if not queued:
        return
    fault = standing_fault(cp, spec.checkpoint.method)
    if fault is not None:  # the image workers boot cannot run these tasks: fail them without a boot
        report.failed_for_image += fail_for_image(cp, queued, fault)
        return

    def admit(task: Task, pool: str, market: Market) -> TaskChange:
        # draining_attempt stays: an interrupted attempt may still commit its final checkpoint (the
        # claim of the new attempt clears it, after the handover).
        return TaskChange(task, TaskState.LAUNCHING, "TaskLaunching", new_attempt=True,
                          set_fields={"pool": pool, "market": market})

    launch_tasks(cp, job, spec, queued, admit, report)


def replace_task(cp: ControlPlane, task: Task, reason: str, report: ScheduleReport | None = None) -> ScheduleReport:
    """Start the next attempt of a running task at once, while the interrupted one checkpoints."""
    report = report or ScheduleReport()
    job = cp.store.get_job(task.job_id)
    if job is None:
        return report
    spec = from_stored(job.spec)
    # counted until now; the attempt's final report adds what it ran on while it checkpointed
    interrupted = ended(task, "interrupted", Scope.ENVIRONMENT, exec_seconds=run_seconds(task, cp.clock()))

    def admit(current: Task, pool: str, market: Market) -> TaskChange:
        avoid = list(dict.fromkeys((*current.avoid_pools, current.pool or "")))[-10:]
        return TaskChange(
            current, TaskState.LAUNCHING, INTERRUPTED, reason=reason, new_attempt=True,
            set_fields={"pool": pool, "market": market, "draining_attempt": current.attempt, "avoid_pools": avoid},
            increments={"interruptions": 1, "consecutive_environment_failures": 1}, end_attempt=interrupted,
        )

    avoided = dataclasses.replace(task, avoid_pools=(*task.avoid_pools, task.pool or ""))
    launch_tasks(cp, job, spec, [avoided], admit, report, snapshot=[task])
    return report


def launch_tasks(
    cp: ControlPlane,
    job: Job,
    spec: JobSpec,
    tasks: Sequence[Task],
    admit: Callable[[Task, str, Market], TaskChange],
    report: ScheduleReport,
    snapshot: Sequence[Task] | None = None,
) -> None:
    """Give each task a pool (broker's order), admit it by a guarded write, launch one call per pool.

    `snapshot` is the stored form of `tasks` when the caller adjusted them for the broker only.
    """
    now = cp.clock()
    stored = {t.index: t for t in (snapshot or tasks)}
    states = {s.pool.key: s for s in pool_states(cp, now)}
    final = broker.final_checkpoint_of([t.checkpoint for t in tasks if t.checkpoint is not None])
    decision = broker.rank_pools(spec.resources, list(states.values()), now, final=final)
    summary = decision.summary()
    remaining = list(tasks)
    for choice in decision.choices:
        if not remaining:
            break
        pool = choice.pool.key
        state = states[pool]
        group = _fitting([t for t in remaining if pool not in t.avoid_pools], max(0, state.cap - state.running))
        for chunk in _admission_chunks(group):
            market = Market.ON_DEMAND if _needs_on_demand(chunk[0]) else Market.SPOT
            if spec.deadline is not None and market == Market.SPOT:
                placement = deadline_decision(cp, job, spec, chunk[0], states, now)
                note = f"{placement.action.value.replace('_', '-')}: {placement.reason}"
                if note != job.policy_note:  # what a waiting job's status says the policy decided
                    cp.store.set_job_policy_note(job.job_id, note)
                    job = dataclasses.replace(job, policy_note=note)
                if placement.action == policy.Action.WAIT:
                    log.info("deadline policy: wait (%s)", placement.reason)
                    remaining = [t for t in remaining if t.index not in {c.index for c in chunk}]
                    continue
                if placement.action == policy.Action.ON_DEMAND:
                    market = Market.ON_DEMAND
                summary_for_chunk = f"{summary}; deadline policy: {placement.reason}"
            else:
                summary_for_chunk = summary
            price = state.on_demand_price if market == Market.ON_DEMAND else state.spot_price
            changes = [_priced(admit(stored[t.index], pool, market), price) for t in chunk]
            token = _launch_token(job, pool, [_after(change) for change in changes])
            instances = sum(t.nodes for t in chunk)  # a gang is alone in its chunk: one call for its N instances
            changes = [_with_launch(change, token, slot, instances) for slot, change in enumerate(changes)]
            conditions = {"max_active": spec.max_concurrency, "account_cap": cp.settings.account_max_instances}
            # admitted when it is admitted (after any refusal of an earlier pool): the timeline reads in order
            if not cp.store.apply_many(changes, cp.clock(), {"broker": summary_for_chunk, "market": market.value},
                                       conditions):
                log.info("admission of %d tasks of %s lost a race or hit a cap", len(changes), job.job_id)
                return
            report.admitted += len(changes)
            admitted = [_after(change) for change in changes]  # their attempt records came with the admission
            launched, _ = _launch(cp, job, pool, market, admitted, report, token, instances)
            for task in admitted[launched:]:
                refused = _undo_admission(cp, task, pool, report.failed_pools.get(pool, "no capacity"))
                stored[task.index] = refused or dataclasses.replace(task, state=TaskState.QUEUED)
            done = {t.index for t in admitted[:launched]}
            remaining = [t for t in remaining if t.index not in done]
            if launched < len(admitted):
                break  # this pool is out of capacity: the rest try the next pool
    if remaining:
        log.info("%d tasks of %s found no pool now: %s", len(remaining), job.job_id, summary)


def _launch(cp: ControlPlane, job: Job, pool: str, market: Market, tasks: Sequence[Task], report: ScheduleReport,
            token: str, count: int | None = None) -> tuple[int, str | None]:
    """One RunInstances for the tasks of one admission (`count` instances, each task in its slot), then each
    instance bound to its task. Returns how many of `tasks` got their instance, and EC2's error code."""
    count = count or len(tasks)
    instance_type, zone = pool.split("@", 1)
    single = tasks[0] if count == 1 else None  # one instance gets its task's tags in the launch itself
    request = LaunchRequest(
        instance_type=instance_type, zone=zone, spot=market == Market.SPOT,
        tags={"spotrun:job": job.job_id, "Name": f"spotrun {job.name}", **_gang_tags(tasks[0])},
        per_instance_tags=[{"spotrun:task": str(single.index), "spotrun:attempt": str(single.attempt)}] if single
        else [{} for _ in range(count)],
        token=token, cluster=tasks[0].nodes > 1 and job.spec.get("placement") == "cluster",
    )
    result = cp.compute.launch(request)
    report.launch_calls += 1
    if tasks[0].nodes > 1 and not result.error_code:
        return _bind_gang(cp, pool, tasks[0], result.instance_ids, report)
    if result.error_code:
        report.failed_pools[pool] = result.error_code
        if result.error_code in CAPACITY_ERRORS:  # throttling says "later", not "this pool is empty"
            report.refused_by_pool[pool] = report.refused_by_pool.get(pool, 0) + 1
            cp.store.cool_down(pool, cp.clock() + timedelta(seconds=cp.settings.cooldown_seconds), result.error_code,
                               cp.clock())
        return 0, result.error_code
    bound = [(t, result.instance_ids[t.launch_slot]) for t in tasks if t.launch_slot < len(result.instance_ids)]
    cp.store.bind_instances([(t.job_id, t.index, t.attempt, instance_id) for t, instance_id in bound], pool,
                            cp.clock())
    report.launched += len(bound)
    report.launched_by_pool[pool] = report.launched_by_pool.get(pool, 0) + len(bound)
    return len(bound), None


def _bind_gang(cp: ControlPlane, pool: str, task: Task, instance_ids: Sequence[str],
               report: ScheduleReport) -> tuple[int, str | None]:
    """A gang is admitted all or nothing: its N instances, bound by rank, or none of them (a launch that
    gave fewer is terminated, and the caller gives the admission back and tries the next pool)."""
    if len(instance_ids) < task.nodes:
        cp.compute.terminate(list(instance_ids))
        report.terminated.extend(instance_ids)
        why = f"{GANG_SHORT}: {len(instance_ids)} of {task.nodes} instances"
        report.failed_pools[pool] = why
        return 0, GANG_SHORT
    ranks = list(instance_ids[:task.nodes])
    cp.store.bind_gang(task.job_id, task.index, task.attempt, ranks, pool, cp.clock())
    cp.store.add_event(TimelineEvent(task.job_id, cp.clock(), "GangLaunched",
                                     f"{task.index}-{task.admissions}-gang-launched", task.index, task.attempt,
                                     {"pool": pool, "ranks": ranks}))
    report.launched += 1
    return 1, None


def _gang_tags(task: Task) -> dict[str, str]:
    """A gang's instances are all its attempt's (one call launches them: the same tags on each)."""
    if task.nodes == 1:
        return {}
    return {"spotrun:task": str(task.index), "spotrun:attempt": str(task.attempt), "spotrun:gang": str(task.nodes)}


def _fitting(tasks: Sequence[Task], room: int) -> list[Task]:
    """The tasks (in order) whose instances fit in `room` instances of a pool: a gang takes its N or waits."""
    chosen = []
    for task in tasks:
        if task.nodes <= room:
            chosen.append(task)
            room -= task.nodes
    return chosen


def _admission_chunks(tasks: Sequence[Task]) -> list[list[Task]]:
    """Single-instance tasks in chunks of ADMISSION_CHUNK; each gang alone (its own launch call)."""
    singles = [t for t in tasks if t.nodes == 1]
    return [*_chunks(singles, ADMISSION_CHUNK), *([t] for t in tasks if t.nodes > 1)]


def _launch_token(job: Job, pool: str, admitted: Sequence[Task]) -> str:
    """One client token per admission (a refused launch gives its attempt number back, never its admission)."""
    return client_token([job.job_id, pool, *(f"{t.index}.{t.attempt}.{t.admissions}" for t in admitted)])


def _with_launch(change: TaskChange, token: str, slot: int, count: int) -> TaskChange:
    return dataclasses.replace(change, set_fields={**change.set_fields, "launch_token": token, "launch_slot": slot,
                                                   "launch_count": count})


def relaunch(cp: ControlPlane, tasks: Sequence[Task], report: ScheduleReport | None = None) -> list[Task]:
    """Admitted tasks whose launch call's answer never came back (the invocation died before or after the
    call): the same call again, with the same client token. EC2 answers it with the instances the first
    call launched, or launches them now; they are bound as after a first launch, and a refusal gives the
    tasks back to the queue as one does. Returns the tasks that got an instance."""
    report = report or ScheduleReport()
    calls: dict[str, list[Task]] = {}
    for task in tasks:
        if task.state == TaskState.LAUNCHING and task.instance_id is None and task.launch_token and task.pool:
            calls.setdefault(task.launch_token, []).append(task)
    done: list[Task] = []
    for token, members in calls.items():
        job = cp.store.get_job(members[0].job_id)
        if job is None:
            continue
        pool, market = members[0].pool or "", members[0].market or Market.SPOT
        launched, error = _launch(cp, job, pool, market, members, report, token, members[0].launch_count)
        if launched:
            done += members
        elif error in CAPACITY_ERRORS or error == GANG_SHORT:
            for task in members:
                _undo_admission(cp, task, pool, error)
    return done


def _undo_admission(cp: ControlPlane, task: Task, pool: str, why: str) -> Task | None:
    """A launch EC2 refused gives the task back to the queue at no cost to it: it was no attempt, so its
    number is given back too, and the refusal goes on the timeline with the pool and EC2's error.
    Returns the task as it is now queued (None if it moved on meanwhile)."""
    change = TaskChange(
        task, TaskState.QUEUED, LAUNCH_REFUSED, reason=f"{pool}: {why}", revert_attempt=True,
        end_attempt=AttemptEnd(task.attempt, pool, "not_launched", Scope.ENVIRONMENT, launched=False),
    )
    if not cp.store.apply(change, cp.clock(), {"error": why}):
        return None
    return dataclasses.replace(task, state=TaskState.QUEUED, attempt=change.attempt, reason=change.reason)


def _priced(change: TaskChange, price: float | None) -> TaskChange:
    return dataclasses.replace(change, set_fields={**change.set_fields, "price_per_hour": price})


def _after(change: TaskChange) -> Task:
    task = change.task
    return dataclasses.replace(
        task, state=change.to_state, attempt=change.attempt, admissions=change.admissions,
        pool=change.set_fields.get("pool", task.pool), market=change.set_fields.get("market", task.market),
        launch_token=change.set_fields.get("launch_token", task.launch_token),
        launch_slot=change.set_fields.get("launch_slot", task.launch_slot),
        launch_count=change.set_fields.get("launch_count", task.launch_count),
        price_per_hour=change.set_fields.get("price_per_hour", task.price_per_hour),
    )


def deadline_decision(cp: ControlPlane, job: Job, spec: JobSpec, task: Task,
                      states: dict[str, broker.PoolState], now: datetime) -> policy.Decision:
    """Ask the deadline policy (the code the policy benchmark runs) whether this task waits, runs on
    spot, or needs on-demand to finish in time."""
    runtime: float | None = spec.task_runtime
    if runtime is None:
        total = job_statistics(job, now)["total"]
        finished = job.counts.get("SUCCEEDED", 0)
        runtime = total["exec_seconds"] / finished if finished else 0.0
    kept = (task.progress or 0.0) if task.checkpoint is not None else 0.0
    remaining = timedelta(seconds=runtime * (1.0 - kept))
    zones: dict[str, policy.ZoneMarket] = {}
    on_demand = []
    for state in states.values():
        cooling = state.cooldown_until is not None and state.cooldown_until > now
        price = state.spot_price
        if state.on_demand_price:
            on_demand.append(state.on_demand_price)
        best = zones.get(state.pool.zone)
        if price is not None and not cooling and (best is None or best.spot_price is None or price < best.spot_price):
            zones[state.pool.zone] = policy.ZoneMarket(state.pool.zone, True, price)
        elif best is None:
            zones[state.pool.zone] = policy.ZoneMarket(state.pool.zone, not cooling and price is not None, price)
    deadline_state = policy.DeadlineState(
        now=now, deadline=spec.deadline, work_remaining=remaining,  # type: ignore[arg-type]
        zones=tuple(zones.values()), on_demand_price=min(on_demand) if on_demand else 1.0,
    )
    return policy.decide(deadline_state)


def _needs_on_demand(task: Task) -> bool:
    return task.consecutive_environment_failures >= ON_DEMAND_AFTER_FAULTS


def _stop_tasks(cp: ControlPlane, job: Job, to_state: TaskState, event: str, reason: str, report: ScheduleReport) -> None:
    """Cancel or suspend every task that is not finished: queued ones (and launching ones, whose program
    has not started) at once, running ones through their agent (`_ask_running`)."""
    now = cp.clock()
    sources = [TaskState.WAITING, TaskState.QUEUED, TaskState.SUSPENDED] if to_state == TaskState.CANCELLED else [TaskState.QUEUED]
    # A big sweep's tasks without items move all at once, first, so none of them gets stored meanwhile.
    _count(report, to_state, sweeps.move_pending(cp, job, tuple(sources), to_state))
    for source in sources:
        while True:
            tasks = cp.store.tasks_in_state(job.job_id, source, 200)
            if not tasks:
                break
            for chunk in _chunks(tasks, ADMISSION_CHUNK):
                cp.store.apply_many([TaskChange(t, to_state, event, reason=reason) for t in chunk], now)
            _count(report, to_state, len(tasks))
    while _end_at_once(cp, cp.store.tasks_in_state(job.job_id, TaskState.LAUNCHING, 200), report, reason, to_state,
                       event):
        pass
    desired = Desired.CANCEL if to_state == TaskState.CANCELLED else Desired.SUSPEND
    _ask_running(cp, cp.store.tasks_in_state(job.job_id, TaskState.RUNNING, 10_000), desired, report, reason)


def _ask_running(cp: ControlPlane, tasks: Sequence[Task], desired: Desired, report: ScheduleReport, reason: str) -> None:
    """A running task is stopped by its agent, which reads its desired state every control poll: to suspend
    it checkpoints first; to cancel it stops the program and uploads the outputs it produced and its log,
    and its report says how long the program ran. Either way the report moves the task. A cancel the
    agent did not carry out within `cancel_grace_seconds` (it may be gone) is carried out here."""
    now = cp.clock()
    overdue = []
    for task in tasks:
        if task.desired != desired:
            cp.store.set_task_desired(task.job_id, task.index, desired, [TaskState.RUNNING], now)
        elif desired == Desired.CANCEL and (task.desired_at is None or (
                now - task.desired_at).total_seconds() > cp.settings.cancel_grace_seconds):
            overdue.append(task)
    _end_at_once(cp, overdue, report, reason)


def _end_at_once(cp: ControlPlane, tasks: Sequence[Task], report: ScheduleReport, reason: str,
                 to_state: TaskState = TaskState.CANCELLED, event: str = "TaskCancelled") -> int:
    """Cancel (or suspend) active tasks without their agent: the instance is terminated; the attempt's run is
    counted from its start (nothing reported how long its program ran). Returns how many moved."""
    now = cp.clock()
    moved = 0
    for chunk in _chunks(list(tasks), ADMISSION_CHUNK):
        changes = [TaskChange(t, to_state, event, reason=reason,
                              end_attempt=ended(t, to_state.lower(), None, exec_seconds=run_seconds(t, now)))
                   for t in chunk]
        if cp.store.apply_many(changes, now):
            ids = [i for t in chunk for i in task_instances(t)]
            cp.compute.terminate(ids)
            report.terminated.extend(ids)
            moved += len(chunk)
    _count(report, to_state, moved)
    return moved


def _cancel_single_tasks(cp: ControlPlane, job: Job, report: ScheduleReport, indexes: Sequence[int]) -> None:
    """Tasks the user cancelled one by one (desired CANCEL on a task of a running job)."""
    if not indexes:
        return
    tasks = cp.store.tasks([(job.job_id, i) for i in indexes]).values()
    _cancel(cp, [t for t in tasks if t.desired == Desired.CANCEL and t.state not in TERMINAL_STATES], report)


def _cancel(cp: ControlPlane, tasks: Sequence[Task], report: ScheduleReport) -> None:
    """Cancel these tasks: a running one through its agent, the others at once."""
    now = cp.clock()
    reason = "cancelled by the user"
    _ask_running(cp, [t for t in tasks if t.state == TaskState.RUNNING], Desired.CANCEL, report, reason)
    _end_at_once(cp, [t for t in tasks if t.state == TaskState.LAUNCHING], report, reason)
    for task in tasks:
        if task.state not in ACTIVE_STATES and cp.store.apply(
                TaskChange(task, TaskState.CANCELLED, "TaskCancelled", reason=reason), now):
            report.cancelled += 1


def _resume_tasks(cp: ControlPlane, job: Job, report: ScheduleReport) -> None:
    now = cp.clock()
    report.resumed += sweeps.move_pending(cp, job, (TaskState.SUSPENDED,), TaskState.QUEUED)
    while True:
        tasks = cp.store.tasks_in_state(job.job_id, TaskState.SUSPENDED, 200)
        _cancel(cp, [t for t in tasks if t.desired == Desired.CANCEL], report)  # cancelled while suspended
        tasks = [t for t in tasks if t.desired != Desired.CANCEL]
        if not tasks:
            return
        for chunk in _chunks(tasks, ADMISSION_CHUNK):
            cp.store.apply_many([TaskChange(t, TaskState.QUEUED, "TaskResumed", set_fields={"desired": Desired.RUN})
                                 for t in chunk], now)
        report.resumed += len(tasks)


def _count(report: ScheduleReport, state: TaskState, n: int) -> None:
    if state == TaskState.CANCELLED:
        report.cancelled += n
    else:
        report.suspended += n


def pool_states(cp: ControlPlane, now: datetime, priced: bool = True) -> list[broker.PoolState]:
    """What the broker needs of each pool: the catalogue's sizes, prices, spotrun's own statistics.
    Without `priced`, no spot price is asked for (the API's function may not read the market)."""
    stats = cp.store.pool_stats(cp.settings.pools)
    prices = cp.prices.prices(cp.settings.instance_types, now) if cp.prices and priced else {}
    states = []
    for key in cp.settings.pools:
        instance_type, zone = key.split("@", 1)
        states.append(catalog.pool_state(
            broker.Pool(instance_type, zone), cp.settings.region, stats.get(key), prices.get(key),
            cap=cp.settings.pool_max_instances,
        ))
    return states


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
