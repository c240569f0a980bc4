"""`make soak`: the chaos soak. Several problems at once on the local runtime while one seed injects faults.

    python -m spotrun_local.soak [--seed N] [--problems P] [--tasks T] [--steps S] [--step-seconds X]
                                 [--budget SECONDS] [--out FILE] [--root DIR]

Problems (P of them, T tasks each plus a combine step whose result is checked; checkpointer
`signal` and `none` alternate) run on the local runtime while `spotrun_local.chaos` injects, all
from `random.Random(seed)`:

- spot reclaims with warnings from the real traces (a window where zones keep losing capacity),
  agents killed with SIGKILL without warning, agents killing themselves right after a checkpoint
  file reached S3 (before its manifest and commit), rebalance recommendations;
- every queue's messages delivered twice (the copy delayed), late (held back) and out of order,
  some heartbeats dropped;
- control plane invocations crashing just before a write or just after one succeeded;
- throttling and 5xx answers from DynamoDB and S3 to the control plane and to agents (retried by
  the SDK, or surfaced to the caller), and DynamoDB writes whose answer is lost after they applied;
- control plane crashes: the whole generation (ControlPlane with its clients and caches, the SQS
  pumps, the reaper) is dropped at once, its in-flight invocations die at their next AWS call, and
  after a pause a fresh one is built from the environment. moto (AWS), the instances and their
  agents stay up: moto runs in this process and *is* AWS here, so "the runtime crashed" means the
  control plane's compute (Lambda containers, the event source pollers, the schedule) died, which
  is what a crash of spotrun's own code can do; AWS's durable state (queues, table, bucket) survives.

When every problem has finished (or the budget is spent: a failure), chaos stops and the soak checks
that each task completed exactly once (one accepted completion on its timeline), every task output
and combined result is correct, no task is stuck, no instance is left running (after a grace for
the reaper), every restored checkpoint had been committed and no program found a corrupt state,
and the dead-letter queues are empty or each message is explained by the faults that used up its
receives. It prints the faults injected by kind and exits non-zero on any loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_SEED = 6
PROGRAM = Path(__file__).resolve().parent / "programs" / "soak.py"
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class SoakOptions:
    seed: int = DEFAULT_SEED
    problems: int = 4
    tasks: int = 6
    steps: int = 70
    step_seconds: float = 0.5
    budget_seconds: float = 900.0
    stagger_seconds: float = 6.0
    tick_seconds: float = 2.0
    root: Path = Path(".spotrun/soak")
    out: Path | None = None
    quiet: bool = False
    chaos: dict[str, Any] = field(default_factory=dict)  # ChaosConfig overrides (tests)


# ------------------------------------------------------------------ market window


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


# ------------------------------------------------------------------ problems


def problem_name(seed: int, k: int) -> str:
    return f"soak-{seed}-p{k}"


def problem_spec(name: str, tasks: int, steps: int, step_seconds: float, method: str) -> dict[str, Any]:
    return {
        "name": name,
        "command": [sys.executable, str(PROGRAM), "work", name, str(steps), str(step_seconds)],
        "outputs": ["result.json"],
        "tasks": tasks,
        "combine": {"command": [sys.executable, str(PROGRAM), "combine", name], "outputs": ["combined.json"]},
        "checkpoint": {"method": method, "interval": 30} if method == "signal" else {"method": "none"},
        "retries": {"program": 0, "environment": 100},
        "max_concurrency": tasks,
        "resources": {"vcpus": 2, "memory_gib": 2},
    }


@dataclass
class Problem:
    name: str
    method: str
    tasks: int
    spec: dict[str, Any]
    job_id: str | None = None
    state: str | None = None
    finished_after: float | None = None


def _submit(runtime: Any, problem: Problem, seed: int, deadline: float) -> None:
    """Through the API's use case on the current control plane (faults and crashes included): retried
    with an idempotency key until it answers, as a client of the API would."""
    from spotrun.jobs import submit_job
    from spotrun_local.runtime import ControlPlaneStopped

    while time.monotonic() < deadline:
        try:
            job, _ = submit_job(runtime.cp, problem.spec, owner="soak", idempotency_key=f"{problem.name}-{seed}")
            problem.job_id = job.job_id
            return
        except (Exception, ControlPlaneStopped) as error:  # noqa: BLE001 - the client retries
            logging.getLogger("spotrun.soak").info("submission of %s failed (%s); retrying", problem.name, error)
            time.sleep(0.5)


# ------------------------------------------------------------------ the run


class Soak:
    def __init__(self, options: SoakOptions):
        from spotrun_local.chaos.injector import Chaos, ChaosConfig

        self.options = options
        config = ChaosConfig(seed=options.seed)
        for key, value in options.chaos.items():
            setattr(config, key, value)
        self.chaos = Chaos(config)
        self.pointers: dict[tuple[str, int], set[int]] = {}
        self.printed = 0.0

    def say(self, text: str) -> None:
        if not self.options.quiet:
            print(text, flush=True)

    def run(self) -> dict[str, Any]:
        from spotrun.adapters.dynamo import DynamoStore
        from spotrun_local.market import MarketReplay, load_traces
        from spotrun_local.runtime import LocalRuntime, RuntimeOptions

        opts = self.options
        started_wall = datetime.now(UTC)
        started = time.monotonic()
        root = opts.root.resolve()
        runtime_options = RuntimeOptions(
            root=root / f"run-{opts.seed}", tick_seconds=opts.tick_seconds, warning_seconds=8.0, heartbeat_seconds=1.5,
            reaper_seconds=3.0, heartbeat_stale_seconds=6, launch_stale_seconds=30, cooldown_seconds=30,
            account_max_instances=10, pool_max_instances=5, visibility_timeout_seconds=5,
        )
        traces = load_traces(zones=runtime_options.zones)
        expected_seconds = self._expected_seconds()
        window_ticks = int(max(expected_seconds * 2, 120) / opts.tick_seconds)
        start_tick, window_losses = chaos_window(traces, runtime_options.zones, window_ticks, self.chaos.window_rng,
                                                 opts.tick_seconds)
        runtime_options.start_tick = start_tick
        market = MarketReplay(traces, start_tick, opts.tick_seconds)
        runtime = LocalRuntime(market, runtime_options)
        self.chaos.attach(runtime)
        problems = [
            Problem(problem_name(opts.seed, k), "signal" if k % 2 == 0 else "none", opts.tasks,
                    problem_spec(problem_name(opts.seed, k), opts.tasks, opts.steps, opts.step_seconds,
                                 "signal" if k % 2 == 0 else "none"))
            for k in range(opts.problems)
        ]
        self.say(f"soak: seed {opts.seed}, {opts.problems} problems x {opts.tasks} tasks + combine, "
                 f"{opts.steps} steps of {opts.step_seconds}s each; traces from tick {start_tick} "
                 f"({window_losses} capacity losses in {window_ticks} ticks of {opts.tick_seconds}s)")
        runtime.start()
        deadline = started + opts.budget_seconds
        outcome: dict[str, Any] = {}
        try:
            self.store = DynamoStore(runtime.session.client("dynamodb"), runtime.env["SPOTRUN_TABLE"])
            self.s3 = runtime.session.client("s3")
            self.bucket = runtime.env["SPOTRUN_BUCKET"]
            self.chaos.start(duration=opts.budget_seconds)
            for k, problem in enumerate(problems):
                if k:
                    time.sleep(opts.stagger_seconds)
                _submit(runtime, problem, opts.seed, deadline)
                self.say(f"  submitted {problem.name} ({problem.method}) as {problem.job_id}")
            finished = self._watch(runtime, problems, started, deadline)
            run_seconds = time.monotonic() - started
            self.chaos.calm()
            self.say(f"soak: {'all problems finished' if finished else 'BUDGET EXPIRED'} after {run_seconds:.0f}s; "
                     "chaos stopped, checking")
            orphans = self._await_no_instances(runtime, runtime_options)
            try:
                outcome = self._check(runtime, problems, finished, orphans)
            except Exception as error:  # noqa: BLE001 - a check that cannot run is a failed check, with a report
                import traceback

                outcome = {"losses": [f"the checks could not run: {error!r}"], "checks": {},
                           "check_error": traceback.format_exc()}
            outcome["run_seconds"] = round(run_seconds, 1)
        finally:
            self.chaos.calm()
            runtime.stop()
        report = {
            "seed": opts.seed, "started_at": started_wall.isoformat(timespec="seconds"),
            "elapsed_seconds": round(time.monotonic() - started, 1),
            "options": {"problems": opts.problems, "tasks_per_problem": opts.tasks, "steps": opts.steps,
                        "step_seconds": opts.step_seconds, "budget_seconds": opts.budget_seconds,
                        "tick_seconds": opts.tick_seconds},
            "market_window": {"start_tick": start_tick, "ticks": window_ticks, "capacity_losses": window_losses},
            "tasks_total": sum(p.tasks + 1 for p in problems),
            "faults": self.chaos.totals(),
            "control_plane_generations": runtime.counters.control_plane_starts,
            "agents_started": runtime.counters.agents_started,
            "agent_exit_codes": _exit_codes(runtime),
            "timed_faults": self.chaos.events,
            "runtime_events": _count_kinds(runtime.counters.events),
            **outcome,
        }
        report["ok"] = not report.get("losses")
        return report

    def _expected_seconds(self) -> float:
        opts = self.options
        task = opts.steps * opts.step_seconds + 10
        waves = max(1.0, opts.problems * opts.tasks / 10)
        return task * waves + task + opts.problems * opts.stagger_seconds

    def _watch(self, runtime: Any, problems: list[Problem], started: float, deadline: float) -> bool:
        while time.monotonic() < deadline:
            for problem in problems:
                if problem.job_id is None or problem.state in FINISHED:
                    continue
                job = self.store.get_job(problem.job_id)
                tasks, _ = self.store.list_tasks(problem.job_id, None, 1000, None)
                for task in tasks:
                    if task.checkpoint is not None:
                        self.pointers.setdefault((problem.job_id, task.index), set()).add(task.checkpoint.seq)
                if job is not None and job.state in FINISHED:
                    problem.state = str(job.state)
                    problem.finished_after = round(time.monotonic() - started, 1)
                    self.say(f"  {problem.name} {problem.state} after {problem.finished_after}s")
            if all(p.state in FINISHED for p in problems):
                return True
            if time.monotonic() - self.printed > 15:
                self.printed = time.monotonic()
                faults = self.chaos.totals()
                self.say(f"  {time.monotonic() - started:5.0f}s  jobs done {sum(p.state in FINISHED for p in problems)}"
                         f"/{len(problems)}  instances {len(self._running_instances(runtime))}  "
                         f"faults {sum(faults.values())}")
            time.sleep(1.0)
        return False

    @staticmethod
    def _running_instances(runtime: Any) -> list[str]:
        found = []
        pages = runtime.ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:spotrun:managed", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for page in pages:
            for reservation in page["Reservations"]:
                found.extend(i["InstanceId"] for i in reservation["Instances"])
        return sorted(found)

    def _await_no_instances(self, runtime: Any, options: Any) -> list[str]:
        """Give the (now fault-free) reaper time to end what chaos left behind; what is still running after
        that is an orphan."""
        grace = options.launch_stale_seconds + 4 * options.reaper_seconds + 10
        until = time.monotonic() + grace
        running = self._running_instances(runtime)
        while running and time.monotonic() < until:
            time.sleep(2.0)
            running = self._running_instances(runtime)
        return running

    # ------------------------------------------------------------------ checks

    def _check(self, runtime: Any, problems: list[Problem], finished: bool, orphans: list[str]) -> dict[str, Any]:
        from spotrun_local.programs import soak as program

        losses: list[str] = []
        anomalies: list[str] = []  # product defects seen that did not (this time) lose anything
        attempts_total = 0
        per_problem = []
        committed_total = restored_total = 0
        duplicate_runs = 0
        restore_checks = {"restores": 0, "committed_by_timeline": 0, "seen_as_pointer_only": 0, "uncommitted": 0,
                          "older_than_newest": 0}
        if not finished:
            losses.append("budget expired before every problem finished")
        for problem in problems:
            if problem.job_id is None:
                losses.append(f"{problem.name}: never submitted")
                continue
            job_id = problem.job_id
            job = self.store.get_job(job_id)
            tasks = {t.index: t for t in self.store.list_tasks(job_id, None, 1000, None)[0]}
            events = self.store.timeline(job_id, 100_000)
            if job is None or str(job.state) != "SUCCEEDED":
                losses.append(f"{problem.name}: job is {job.state if job else 'missing'}" + (
                    f" (counts {job.counts}, active {job.active}, desired {job.desired}; account active "
                    f"{self.store.account_active()})" if job else ""))
            accs = []
            for index in range(problem.tasks + 1):
                task = tasks.get(index)
                kind = "combine" if index == problem.tasks else "task"
                if task is None or str(task.state) != "SUCCEEDED":
                    losses.append(f"{problem.name} {kind} {index}: {task.state if task else 'missing'} (stuck or lost)"
                                  + (f" at attempt {task.attempt} (pool {task.pool}, instance {task.instance_id}, "
                                     f"desired {task.desired}, updated {task.updated_at:%H:%M:%S}): {task.reason}"
                                     if task else ""))
                ends = [e for e in events if e.index == index and e.kind in ("TaskSucceeded", "TaskFailed",
                                                                            "TaskCancelled")]
                if len(ends) != 1 or ends[0].kind != "TaskSucceeded":
                    losses.append(f"{problem.name} {kind} {index}: accepted completions "
                                  f"{[(e.kind, e.attempt) for e in ends]} (want exactly one TaskSucceeded)")
                records = self._attempt_items(job_id, index)
                partial = [r for r in records if "job_id" not in r or "pool" not in r]
                if partial:
                    anomalies.append(f"{problem.name} {kind} {index}: attempt records without identity (the store's "
                                     f"attempts() cannot read them): {[r['sk'] for r in partial]}")
                completed = [r for r in records if r.get("outcome") == "completed" and r.get("exit_code") == 0]
                duplicate_runs += max(0, len(completed) - 1)
                attempts_total += sum(1 for r in records if r.get("outcome") != "not_launched")
                if kind == "task":
                    result = self._read_json(f"jobs/{job_id}/outputs/{index}/result.json")
                    want = program.chain(problem.name, index, self.options.steps)
                    if result is None:
                        losses.append(f"{problem.name} task {index}: no result.json")
                        accs.append(want)
                        continue
                    got = int(result["acc"], 16)
                    accs.append(got)
                    if got != want or result.get("steps") != self.options.steps:
                        losses.append(f"{problem.name} task {index}: wrong output {result} (want acc {want:016x})")
            combined = self._read_json(f"jobs/{job_id}/outputs/{problem.tasks}/combined.json")
            want_combined = program.combined([program.chain(problem.name, i, self.options.steps)
                                              for i in range(problem.tasks)])
            if combined is None or combined.get("combined") != want_combined:
                losses.append(f"{problem.name}: combined result {combined} != {want_combined}")
            commits = [e for e in events if e.kind == "CheckpointCommitted"]
            restores = [e for e in events if e.kind == "CheckpointRestored"]
            committed_total += len(commits)
            restored_total += len(restores)
            committed_seqs: dict[int, dict[int, datetime]] = {}
            for e in commits:
                committed_seqs.setdefault(e.index or 0, {})[e.detail["seq"]] = e.at
            for e in restores:
                restore_checks["restores"] += 1
                index, seq = e.index or 0, e.detail["seq"]
                if seq in committed_seqs.get(index, {}):
                    restore_checks["committed_by_timeline"] += 1
                elif seq in self.pointers.get((job_id, index), set()):
                    restore_checks["seen_as_pointer_only"] += 1
                else:
                    restore_checks["uncommitted"] += 1
                    losses.append(f"{problem.name} task {index}: attempt {e.attempt} restored checkpoint {seq}, "
                                  "which was never seen committed")
                newer = [s for s, at in committed_seqs.get(index, {}).items() if s > seq and at < e.at]
                if newer:
                    restore_checks["older_than_newest"] += 1
            attempts, attempts_total = attempts_total, 0
            timelines: dict[int, list[str]] = {}
            for e in events:
                if e.index is not None:
                    seq = f"({e.detail['seq']})" if "seq" in e.detail else ""
                    timelines.setdefault(e.index, []).append(f"{e.at:%H:%M:%S} {e.kind}#{e.attempt}{seq}")
            per_problem.append({
                "timelines": {str(k): v for k, v in sorted(timelines.items())},
                "name": problem.name, "job_id": job_id, "checkpointer": problem.method, "tasks": problem.tasks,
                "state": str(job.state) if job else None, "finished_after_seconds": problem.finished_after,
                "attempts": attempts, "checkpoints_committed": len(commits), "checkpoints_restored": len(restores),
                "interruptions": sum(1 for e in events if e.kind in ("TaskReplacing", "TaskInterrupted")),
            })
        corrupt = self._program_corruption(runtime)
        for line in corrupt:
            losses.append(f"a program found a corrupt checkpoint: {line}")
        for instance_id in orphans:
            losses.append(f"orphan instance still running after the grace: {instance_id}")
        live_agents = [i.instance_id for i in runtime.instances.values()
                       if i.process is not None and i.process.poll() is None and i.instance_id not in orphans]
        dead_letters = self._dead_letters(runtime)
        for letter in dead_letters:
            if not letter["explained"]:
                losses.append(f"unexplained dead letter on {letter['queue']}: {letter['body'][:200]}")
        return {
            "problems": per_problem,
            "checks": {
                "every_task_completed_exactly_once": not any("accepted completions" in x or "stuck" in x for x in losses),
                "outputs_and_combined_results_correct": not any("output" in x or "combined" in x or "result" in x
                                                                for x in losses),
                "no_orphan_instance": not orphans,
                "no_partial_checkpoint_restored": restore_checks["uncommitted"] == 0 and not corrupt,
                "dead_letters_explained": all(d["explained"] for d in dead_letters),
            },
            "checkpoints": {"committed": committed_total, "restored": restored_total, **restore_checks},
            "program_runs_to_completion_not_accepted": duplicate_runs,
            "agents_alive_at_end": live_agents,
            "dead_letters": dead_letters,
            "handler_failures_without_injected_fault": self._uninjected_failures(),
            "agent_failures": self._agent_failures(runtime),
            "anomalies": anomalies,
            "losses": losses,
        }

    def _attempt_items(self, job_id: str, index: int) -> list[dict[str, Any]]:
        """The task's attempt records, read raw (the soak must see records the store's reader would reject)."""
        from spotrun.adapters.dynamo import deserialize, serialize, task_pk

        answer = self.store.client.query(
            TableName=self.store.table, KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues=serialize({":p": task_pk(job_id, index), ":a": "ATTEMPT#"}))
        return [deserialize(item) for item in answer.get("Items", [])]

    def _read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except Exception:  # noqa: BLE001 - missing is reported by the caller
            return None

    def _program_corruption(self, runtime: Any) -> list[str]:
        found = []
        for path in (runtime.options.root / "instances").glob("*/work/*/*/.spotrun/attempt-*.log"):
            try:
                for line in path.read_text(errors="replace").splitlines():
                    if "CORRUPT" in line:
                        found.append(f"{path.relative_to(runtime.options.root)}: {line.strip()}")
            except OSError:
                continue
        return found

    def _agent_failures(self, runtime: Any) -> dict[str, int]:
        """Why agents gave up attempts on their own (`agent failure: ...` lines), by first words."""
        counts: dict[str, int] = {}
        for path in (runtime.options.root / "instances").glob("*/agent.log"):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            for n, line in enumerate(lines):
                if any(what in line for what in ("agent failure", "final checkpoint failed", "claim refused",
                                                  "was not committed", "did not hand over")):
                    key = line.split(" ", 3)[-1][:90]
                    if "Traceback" in (lines[n + 1] if n + 1 < len(lines) else ""):  # name the exception
                        error = next((x for x in lines[n + 2:] if x and not x[0].isspace()), "")
                        key += f": {error[:160]}"
                    counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:15])

    def _uninjected_failures(self) -> int:
        return sum(1 for history in self.chaos.receipts.history.values() for what in history if what == "failed")

    def _dead_letters(self, runtime: Any) -> list[dict[str, Any]]:
        letters = []
        for queue, url in json.loads(runtime.env["SPOTRUN_DLQ_URLS"]).items():
            seen: set[str] = set()
            while True:
                messages = runtime.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300,
                                                       WaitTimeSeconds=0).get("Messages", [])
                fresh = [m for m in messages if m["MessageId"] not in seen]
                if not fresh:
                    break
                for message in fresh:
                    seen.add(message["MessageId"])
                    history = self._history_of(message)
                    letters.append({"queue": queue, "message_id": message["MessageId"], "body": message["Body"][:600],
                                    "receives": history, "explained": explain_dead_letter(history)})
        return letters

    def _history_of(self, message: dict[str, Any]) -> list[str]:
        receipts = self.chaos.receipts
        history = receipts.history.get(message["MessageId"])
        if history is None:  # matched by body when the dead-letter queue gave it a new id
            for mid, body in receipts.bodies.items():
                if body == message["Body"]:
                    history = receipts.history[mid]
                    break
        return [h for h in (history or []) if h != "received"]


def explain_dead_letter(history: list[str]) -> bool:
    """A dead letter is explained when every receive that did not end in a delete met an injected fault, a
    hold-back or a control plane crash (a plain "failed" is a handler error nobody injected)."""
    return bool(history) and "failed" not in history and "handled" not in history


def _count_kinds(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    return dict(sorted(counts.items()))


def _exit_codes(runtime: Any) -> dict[str, int]:
    """How agent processes ended: 0 done, 3 no attempt found, 4 gave up (agent failure), -9 SIGKILL, ..."""
    codes: dict[str, int] = {}
    for instance in runtime.instances.values():
        code = instance.exit_code if instance.exit_code is not None else (
            instance.process.poll() if instance.process is not None else None)
        key = "running" if code is None else str(code)
        codes[key] = codes.get(key, 0) + 1
    return dict(sorted(codes.items()))


# ------------------------------------------------------------------ report


def print_report(report: dict[str, Any]) -> None:
    print("\nsoak report")
    print(f"  seed {report['seed']}  elapsed {report['elapsed_seconds']}s  tasks {report['tasks_total']}  "
          f"control plane generations {report.get('control_plane_generations')}  agents {report.get('agents_started')}")
    print("  faults injected:")
    for kind, count in report["faults"].items():
        print(f"    {kind:<40} {count}")
    for problem in report.get("problems", []):
        print(f"  {problem['name']:<16} {problem['checkpointer']:<7} {problem['state']:<10} "
              f"after {problem['finished_after_seconds']}s  attempts {problem['attempts']}  "
              f"interruptions {problem['interruptions']}  checkpoints {problem['checkpoints_committed']} committed, "
              f"{problem['checkpoints_restored']} restored")
    print(f"  agent processes by exit code: {report.get('agent_exit_codes')}")
    print(f"  checkpoints: {report.get('checkpoints')}")
    print(f"  program runs that completed but were not the accepted one: "
          f"{report.get('program_runs_to_completion_not_accepted')}")
    print(f"  handler failures without an injected fault: {report.get('handler_failures_without_injected_fault')}")
    if report.get("agent_failures"):
        print("  agents ending attempts on their own:")
        for line, count in report["agent_failures"].items():
            print(f"    {count:>4}  {line}")
    letters = report.get("dead_letters", [])
    print(f"  dead letters: {len(letters)}")
    for letter in letters:
        print(f"    [{letter['queue']}] {'explained' if letter['explained'] else 'UNEXPLAINED'}: "
              f"receives {letter['receives']}\n      {letter['body'][:300]}")
    print("  checks:")
    for name, ok in report.get("checks", {}).items():
        print(f"    {'ok  ' if ok else 'FAIL'} {name}")
    anomalies = report.get("anomalies", [])
    print(f"  anomalies (product defects that lost nothing this time): {len(anomalies)}")
    for anomaly in anomalies:
        print(f"    - {anomaly}")
    losses = report.get("losses", [])
    print(f"  losses: {len(losses)}")
    for loss in losses:
        print(f"    - {loss}")
    print("  result:", "PASS" if report["ok"] else "FAIL")


def parse_args(argv: list[str]) -> list[SoakOptions]:
    parser = argparse.ArgumentParser(prog="python -m spotrun_local.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append",
                        help=f"the one seed of every fault of a run (default {DEFAULT_SEED}); repeat for several runs")
    parser.add_argument("--random-seeds", type=int, default=0, help="add this many runs with drawn seeds (printed)")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=6, help="tasks per problem (each problem adds a combine step)")
    parser.add_argument("--steps", type=int, default=70, help="steps of each task's program")
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds until an unfinished run counts as failed")
    parser.add_argument("--tick-seconds", type=float, default=2.0, help="wall seconds per trace tick")
    parser.add_argument("--root", type=Path, default=Path(".spotrun/soak"))
    parser.add_argument("--out", type=Path, help="write the figures of every run as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    seeds = list(args.seed or ([] if args.random_seeds else [DEFAULT_SEED]))
    seeds += [int.from_bytes(os.urandom(4), "big") % 1_000_000 for _ in range(args.random_seeds)]
    return [SoakOptions(seed=seed, problems=args.problems, tasks=args.tasks, steps=args.steps,
                        step_seconds=args.step_seconds, budget_seconds=args.budget, tick_seconds=args.tick_seconds,
                        root=args.root, out=args.out, quiet=args.quiet) for seed in seeds]


def run(options: SoakOptions) -> dict[str, Any]:
    """One soak run; with `options.out`, its report is written there as {"runs": [report], "ok": ...}."""
    import shutil

    shutil.rmtree(options.root / f"run-{options.seed}", ignore_errors=True)
    report = Soak(options).run()
    if options.out is not None:
        write_reports(options.out, [report])
    return report


def write_reports(path: Path, reports: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = [{"seed": r["seed"], "ok": r["ok"], "elapsed_seconds": r["elapsed_seconds"], "tasks": r["tasks_total"],
                "faults_injected": sum(r["faults"].values()), "losses": len(r.get("losses", []))} for r in reports]
    path.write_text(json.dumps({"ok": all(r["ok"] for r in reports), "summary": summary, "runs": reports},
                               indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    runs = parse_args(sys.argv[1:] if argv is None else argv)
    root = runs[0].root
    root.mkdir(parents=True, exist_ok=True)
    # Injected crashes log tracebacks by design: they go to a file, the console gets the soak's own lines.
    logging.basicConfig(level=logging.WARNING, filename=str(root / "soak.log"), filemode="w",
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s")
    from spotrun.handlers.common import logger as powertools_logger  # its handler writes to stdout

    handlers_log = open(root / "handlers.log", "w")  # noqa: SIM115 - lives as long as the process
    for handler in list(powertools_logger._logger.handlers):
        handler.setStream(handlers_log)
    # The handlers' EMF metrics (CloudWatch in AWS) are printed to stdout when a batch fills up: to the file too.
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch as emf

    emf.print = lambda *args, **kwargs: print(*args, **{**kwargs, "file": handlers_log})  # type: ignore[attr-defined]
    reports = []
    for options in runs:
        import shutil

        shutil.rmtree(options.root / f"run-{options.seed}", ignore_errors=True)
        report = Soak(options).run()
        reports.append(report)
        print_report(report)
        if options.out is not None:
            write_reports(options.out, reports)
    if runs[0].out is not None:
        print(f"figures written to {runs[0].out}")
    if len(reports) > 1:
        print("\nsoak runs: " + ", ".join(f"seed {r['seed']} {'PASS' if r['ok'] else 'FAIL'} ({r['elapsed_seconds']}s)"
                                         for r in reports))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
