"""Items and the model: each stored shape's item (with its index attributes) and back.

The mappers are the only place that knows how a `Job`, `Task`, `Attempt`, `Worker` or
`TimelineEvent` looks in the table; the store's entity modules build and read items through them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from spotrun.access import BEAT
from spotrun.adapters.dynamo.codec import iso, parse_time
from spotrun.adapters.dynamo.keys import (
    attempt_key,
    by_job_pk,
    by_state_pk,
    events_pk,
    index_sort_key,
    job_key,
    jobs_by_time_pk,
    shard_of,
    task_key,
    worker_key,
)
from spotrun.domain.model import (
    Attempt,
    Checkpoint,
    Desired,
    Job,
    JobState,
    Market,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
    Worker,
)


def job_from(item: dict[str, Any]) -> Job:
    return Job(
        job_id=item["job_id"], name=item["name"], spec=json.loads(item["spec"]), state=JobState(item["state"]),
        task_count=int(item["task_count"]), has_combine=bool(item.get("has_combine")),
        counts={k: int(v) for k, v in item.get("counts", {}).items()}, active=int(item.get("active", 0)),
        desired=Desired(item.get("desired", Desired.RUN)), created_at=parse_time(item["created_at"]),  # type: ignore[arg-type]
        updated_at=parse_time(item["updated_at"]), owner=item.get("owner", ""), reason=item.get("reason", ""),  # type: ignore[arg-type]
        policy_note=item.get("policy_note", ""),
        stats={k: float(v) for k, v in item.get("stats", {}).items()},
        materialized=int(item["materialized"]) if item.get("materialized") is not None else None,
        pending_state=TaskState(item.get("pending_state", TaskState.QUEUED)),
        stored_ahead=int(item.get("stored_ahead", 0)),
    )


def checkpoint_from(value: dict[str, Any] | None) -> Checkpoint | None:
    if not value:
        return None
    return Checkpoint(
        seq=int(value["seq"]), key=value["key"], attempt=int(value["attempt"]), size_bytes=int(value.get("size_bytes", 0)),
        committed_at=parse_time(value["committed_at"]), method=value.get("method", ""),  # type: ignore[arg-type]
        predicted_final_seconds=_number(value.get("predicted_final_seconds")),
        final_fits_warning=value.get("final_fits_warning"),
        capture_bytes_per_second=_number(value.get("capture_bytes_per_second")),
        upload_bytes_per_second=_number(value.get("upload_bytes_per_second")),
        final_budget_seconds=_number(value.get("final_budget_seconds")),
        ranks=int(value.get("ranks", 1)),
    )


# The agent's measurements a checkpoint pointer may carry (spotrun.domain.model.Checkpoint).
MEASURED_FIELDS = ("predicted_final_seconds", "final_fits_warning", "capture_bytes_per_second",
                   "upload_bytes_per_second", "final_budget_seconds")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def beat_of(item: dict[str, Any]) -> tuple[datetime | None, float | None]:
    """(last heartbeat, progress) from the agent's own `beat` (`TaskStore.record_beat`).

    The agent writes it with its task session, which may touch nothing else, so here is the fencing:
    the beat is the task's last heartbeat only when it names the task's current attempt, and never while
    the task is launching (an agent beats once it has claimed its task; an older attempt's agent cannot
    make a newer one look alive, nor anything make an unclaimed launch look alive). The reaper looks at
    launching and running tasks only, so for it a beat counts while its attempt runs; a finished task
    keeps showing its attempt's last heartbeat, as before. Progress is the last an agent
    reported, whichever attempt (as before: it outlives the attempt, and the deadline policy weighs it
    for a task requeued with a checkpoint). The session could write anything there, so a value of the
    wrong shape counts as no beat. Items written before the beat existed keep their top-level
    `last_heartbeat_at` and `progress`, read when there is no beat."""
    legacy = parse_time(item.get("last_heartbeat_at")), item.get("progress")
    beat = item.get(BEAT)
    if beat is None:
        return legacy
    try:
        attempt, at = int(beat["attempt"]), parse_time(beat["at"])
        progress = beat.get("progress")
        progress = None if progress is None else float(progress)
    except (TypeError, KeyError, ValueError, AttributeError, ArithmeticError):
        return legacy
    if at is None or at.tzinfo is None:
        return legacy
    if progress is not None and not 0.0 <= progress <= 1.0:
        progress = None
    current = attempt == int(item.get("attempt", 0)) and item.get("state") != TaskState.LAUNCHING.value
    return (at if current else legacy[0]), (progress if progress is not None else legacy[1])


def task_from(item: dict[str, Any]) -> Task:
    last_heartbeat_at, progress = beat_of(item)
    return Task(
        job_id=item["job_id"], index=int(item["index"]), state=TaskState(item["state"]), attempt=int(item.get("attempt", 0)),
        desired=Desired(item.get("desired", Desired.RUN)), desired_at=parse_time(item.get("desired_at")),
        kind=item.get("kind", "task"),
        admissions=int(item.get("admissions", 0)), pool=item.get("pool"),
        market=Market(item["market"]) if item.get("market") else None, instance_id=item.get("instance_id"),
        program_failures=int(item.get("program_failures", 0)), environment_failures=int(item.get("environment_failures", 0)),
        interruptions=int(item.get("interruptions", 0)), price_per_hour=item.get("price_per_hour"),
        consecutive_environment_failures=int(item.get("consecutive_environment_failures", 0)),
        avoid_pools=tuple(item.get("avoid_pools", ())), checkpoint=checkpoint_from(item.get("checkpoint")),
        draining_attempt=item.get("draining_attempt"),
        checkpoint_requested_at=parse_time(item.get("checkpoint_requested_at")), last_heartbeat_at=last_heartbeat_at,
        launch_token=item.get("launch_token"), launch_slot=int(item.get("launch_slot", 0)),
        launch_count=int(item.get("launch_count", 1)),
        nodes=int(item.get("nodes", 1)), gang_instances=tuple(item.get("gang_instances", ())),
        progress=progress, exit_code=item.get("exit_code"), reason=item.get("reason", ""),
        log_tail=item.get("log_tail", ""), launched_at=parse_time(item.get("launched_at")),
        started_at=parse_time(item.get("started_at")), finished_at=parse_time(item.get("finished_at")),
        updated_at=parse_time(item.get("updated_at")),
    )


def attempt_from(item: dict[str, Any]) -> Attempt:
    return Attempt(
        job_id=item["job_id"], index=int(item["index"]), number=int(item["number"]), pool=item["pool"],
        market=Market(item["market"]), instance_id=item.get("instance_id"), launched_at=parse_time(item.get("launched_at")),
        ended_at=parse_time(item.get("ended_at")), outcome=item.get("outcome"),
        scope=Scope(item["scope"]) if item.get("scope") else None, exit_code=item.get("exit_code"),
        exec_seconds=float(item.get("exec_seconds", 0.0)), price_per_hour=item.get("price_per_hour"),
        drained_at=parse_time(item.get("drained_until")),
        restored_seq=_integer(item.get("restored_seq")), restored_from=_integer(item.get("restored_from")),
        nodes=int(item.get("nodes", 1)), gang_instances=tuple(item.get("gang_instances", ())),
    )


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def event_from(item: dict[str, Any]) -> TimelineEvent:
    return TimelineEvent(
        job_id=item["job_id"], at=parse_time(item["at"]), kind=item["kind"], event_id=item["event_id"],  # type: ignore[arg-type]
        index=item.get("index"), attempt=item.get("attempt"), detail=item.get("detail", {}),
    )


def job_item(job: Job) -> dict[str, Any]:
    return {
        **job_key(job.job_id), "type": "job", "job_id": job.job_id, "name": job.name,
        "spec": json.dumps(job.spec, separators=(",", ":")), "state": job.state, "task_count": job.task_count,
        "has_combine": job.has_combine, "counts": job.counts, "active": job.active, "desired": job.desired,
        "created_at": job.created_at, "updated_at": job.updated_at, "owner": job.owner, "stats": {},
        "list_pk": jobs_by_time_pk(job.state), "list_sk": f"{iso(job.created_at)}#{job.job_id}",
        **({"materialized": job.materialized, "pending_state": job.pending_state,
                                                    "stored_ahead": job.stored_ahead} if job.materialized is not None else {}),
    }


def task_item(task: dict[str, Any], now: datetime) -> dict[str, Any]:
    job_id, index, state = task["job_id"], task["index"], task["state"]
    return {
        **task_key(job_id, index), "type": "task", "attempt": 0, "updated_at": now, **task,
        "state_pk": by_state_pk(job_id, state, shard_of(index)), "state_sk": index_sort_key(index),
        "job_pk": by_job_pk(job_id, shard_of(index)), "job_sk": index_sort_key(index),
    }


def attempt_item(a: Attempt) -> dict[str, Any]:
    return {
        **attempt_key(a.job_id, a.index, a.number), "type": "attempt", "job_id": a.job_id, "index": a.index,
        "number": a.number, "pool": a.pool, "market": a.market, "launched_at": a.launched_at,
        "price_per_hour": a.price_per_hour, "instance_id": a.instance_id, "nodes": a.nodes,
    }


def event_item(event: TimelineEvent) -> dict[str, Any]:
    return {
        "pk": events_pk(event.job_id, shard_of(event.index or 0)), "sk": f"{iso(event.at)}#{event.event_id}", "type": "event",
        "job_id": event.job_id, "at": event.at, "kind": event.kind, "event_id": event.event_id,
        "index": event.index, "attempt": event.attempt, "detail": event.detail,
    }


def worker_item(instance_id: str, job_id: str, index: int, attempt: int, pool: str, launched_at: datetime,
                rank: int = 0) -> dict[str, Any]:
    return {**worker_key(instance_id), "type": "worker", "instance_id": instance_id, "job_id": job_id, "index": index,
            "attempt": attempt, "pool": pool, "launched_at": launched_at, "rank": rank}


def worker_from(item: dict[str, Any]) -> Worker:
    return Worker(item["instance_id"], item["job_id"], int(item["index"]), int(item["attempt"]), item["pool"],
                  parse_time(item["launched_at"]), int(item.get("rank", 0)))  # type: ignore[arg-type]
