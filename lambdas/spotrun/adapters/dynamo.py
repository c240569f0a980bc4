"""The store: every job, task, attempt, worker, pool and timeline item in one DynamoDB table.

Key layout (pk / sk):
  JOB#<job>                 JOB              the job; GSI jobs_by_time: JOBS#<state> / <created>#<job>
  TASK#<job>#<index>        TASK             a task; GSIs by_state (<job>#<state>#<shard>) and
                                             by_job (<job>#<shard>), live (LIVE#<shard>) while active
  TASK#<job>#<index>        ATTEMPT#<n>      one attempt of the task
  WORKER#<instance>         WORKER           which attempt an instance serves
  POOL#<type>@<zone>        STATS            per-pool statistics, load and cool-down
  ACCOUNT                   CAPACITY         tasks holding a worker, account-wide (the cap)
  EVENTS#<job>#<shard>      <time>#<id>      the job's timeline

Tasks live in their own partitions and every task index is sharded over TASK_SHARDS index keys,
so a 100,000-task job makes no hot partition. Every state change is a transaction whose
condition pins the state and attempt it was decided on; a failed condition means someone else
moved first and the caller re-reads.
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from spotrun.domain.accounting import attempt_usage, drain_usage
from spotrun.domain.lifecycle import TaskChange, last_sign_of_life
from spotrun.domain.model import (
    ACTIVE_STATES,
    Attempt,
    Checkpoint,
    Desired,
    Job,
    JobState,
    Market,
    PoolStats,
    Scope,
    Task,
    TaskState,
    TimelineEvent,
    Worker,
)

TASK_SHARDS = 16
BATCH_WRITE_THREADS = 16


class ConflictError(Exception):
    """A guarded write found the item moved on (or a cap full); re-read and decide again."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def shard_of(index: int) -> int:
    return index % TASK_SHARDS


def job_key(job_id: str) -> dict[str, str]:
    return {"pk": f"JOB#{job_id}", "sk": "JOB"}


def task_pk(job_id: str, index: int) -> str:
    return f"TASK#{job_id}#{index:06d}"


def task_key(job_id: str, index: int) -> dict[str, str]:
    return {"pk": task_pk(job_id, index), "sk": "TASK"}


def attempt_key(job_id: str, index: int, number: int) -> dict[str, str]:
    return {"pk": task_pk(job_id, index), "sk": f"ATTEMPT#{number:04d}"}


def pool_key(pool: str) -> dict[str, str]:
    return {"pk": f"POOL#{pool}", "sk": "STATS"}


ACCOUNT_KEY = {"pk": "ACCOUNT", "sk": "CAPACITY"}


# DynamoDB numbers: at most 38 significant digits, magnitude 1E-130 up to (not including) 1E+126.
_SMALLEST = 1e-130
_LARGEST = 1e126


class UnstorableValue(ValueError):
    """A value DynamoDB cannot hold (NaN, infinity, a number out of its range, an unknown type)."""


def _number(value: int | float | Decimal) -> str:
    """The wire form of a number, refusing what DynamoDB would reject after the fact.

    Floats print as their shortest round-trip form (at most 17 significant digits); a float closer
    to zero than DynamoDB's smallest magnitude is stored as 0 (a progress of 1e-200 is 0).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnstorableValue(f"{value!r} is not a finite number")
        if value and abs(value) < _SMALLEST:
            return "0"
        if abs(value) >= _LARGEST:
            raise UnstorableValue(f"{value!r} is larger than DynamoDB numbers go")
        return str(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite() or (value and not Decimal("1E-130") <= abs(value) < Decimal("1E126")):
            raise UnstorableValue(f"{value} is out of DynamoDB's number range")
        digits = "".join(map(str, value.as_tuple().digits)).strip("0")
        if len(digits) > 38:
            raise UnstorableValue(f"{value} has more than 38 significant digits")
        return str(value)
    if abs(value) >= 10**38:
        raise UnstorableValue(f"{value} has more than 38 digits")
    return str(value)


def _wire(value: Any) -> dict[str, Any]:
    """One AttributeValue. Written for speed (a 100,000-task submit serializes every task item):
    exact type checks first, isinstance for subclasses (enums, IntEnum) after."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": _number(value)}
    if kind is bool:
        return {"BOOL": value}
    if kind is dict:
        return {"M": {str(k): _wire(v) for k, v in value.items() if v is not None}}
    if kind is list or kind is tuple:
        return {"L": [_wire(v) for v in value]}
    if kind is float:
        return {"N": _number(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, datetime):
        return {"S": iso(value)}
    if isinstance(value, str):  # StrEnum
        return {"S": str(value)}
    if isinstance(value, (int, Decimal)):
        return {"N": _number(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    if isinstance(value, (set, frozenset)) and value and all(isinstance(v, str) for v in value):
        return {"SS": sorted(value)}
    raise UnstorableValue(f"cannot store a {kind.__name__}")


def _plain(wire: dict[str, Any]) -> Any:
    """The Python value of one AttributeValue; integral numbers become int, others float."""
    kind, inner = next(iter(wire.items()))
    if kind == "S":
        return inner
    if kind == "N":
        if "." not in inner and "e" not in inner and "E" not in inner:
            return int(inner)
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "M":
        return {k: _plain(v) for k, v in inner.items()}
    if kind == "L":
        return [_plain(v) for v in inner]
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    if kind == "SS":
        return set(inner)
    if kind == "NS":
        return {_plain({"N": n}) for n in inner}
    return inner  # B, BS


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _wire(v) for k, v in item.items() if v is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in item.items()}


class _Expression:
    """Builds update/condition expressions with placeholders, so attribute names never clash."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._adds: list[str] = []
        self._removes: list[str] = []
        self.conditions: list[str] = []

    def name(self, path: str) -> str:
        parts = []
        for part in path.split("."):
            placeholder = f"#n{len(self.names)}"
            self.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, path: str, value: Any) -> None:
        if value is None:
            self.remove(path)
        else:
            self._sets.append(f"{self.name(path)} = {self.value(value)}")

    def add(self, path: str, amount: int | float) -> None:
        self._adds.append(f"{self.name(path)} {self.value(amount)}")

    def remove(self, path: str) -> None:
        self._removes.append(self.name(path))

    def condition(self, text: str, **operands: Any) -> None:
        for key, operand in operands.items():
            text = text.replace("{" + key + "}", self.name(operand[1:]) if str(operand).startswith("@") else self.value(operand))
        self.conditions.append(text)

    def add_in_map(self, map_name: str, key: str, amount: int | float) -> None:
        """ADD to `map_name[key]`, where the key may hold dots (pool names do)."""
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = key
        self._adds.append(f"{self.name(map_name)}.{placeholder} {self.value(amount)}")

    def condition_in(self, path: str, allowed: Sequence[Any]) -> None:
        """The attribute at `path` equals one of `allowed`."""
        name = self.name(path)
        self.conditions.append(" OR ".join(f"{name} = {self.value(v)}" for v in allowed))

    def update(self) -> dict[str, Any]:
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        out: dict[str, Any] = {"UpdateExpression": " ".join(clauses)}
        out.update(self.common())
        return out

    def common(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.conditions:
            out["ConditionExpression"] = " AND ".join(f"({c})" for c in self.conditions)
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = serialize(self.values)
        return out


def _job_from(item: dict[str, Any]) -> Job:
    return Job(
        job_id=item["job_id"], name=item["name"], spec=json.loads(item["spec"]), state=JobState(item["state"]),
        task_count=int(item["task_count"]), has_combine=bool(item.get("has_combine")),
        counts={k: int(v) for k, v in item.get("counts", {}).items()}, active=int(item.get("active", 0)),
        desired=Desired(item.get("desired", Desired.RUN)), created_at=parse_time(item["created_at"]),  # type: ignore[arg-type]
        updated_at=parse_time(item["updated_at"]), owner=item.get("owner", ""), reason=item.get("reason", ""),  # type: ignore[arg-type]
        stats={k: float(v) for k, v in item.get("stats", {}).items()},
    )


def _checkpoint_from(value: dict[str, Any] | None) -> Checkpoint | None:
    if not value:
        return None
    return Checkpoint(
        seq=int(value["seq"]), key=value["key"], attempt=int(value["attempt"]), size_bytes=int(value.get("size_bytes", 0)),
        committed_at=parse_time(value["committed_at"]), method=value.get("method", ""),  # type: ignore[arg-type]
    )


def task_from(item: dict[str, Any]) -> Task:
    return Task(
        job_id=item["job_id"], index=int(item["index"]), state=TaskState(item["state"]), attempt=int(item.get("attempt", 0)),
        desired=Desired(item.get("desired", Desired.RUN)), kind=item.get("kind", "task"), pool=item.get("pool"),
        market=Market(item["market"]) if item.get("market") else None, instance_id=item.get("instance_id"),
        program_failures=int(item.get("program_failures", 0)), environment_failures=int(item.get("environment_failures", 0)),
        interruptions=int(item.get("interruptions", 0)), price_per_hour=item.get("price_per_hour"),
        consecutive_environment_failures=int(item.get("consecutive_environment_failures", 0)),
        avoid_pools=tuple(item.get("avoid_pools", ())), checkpoint=_checkpoint_from(item.get("checkpoint")),
        draining_attempt=item.get("draining_attempt"),
        checkpoint_requested_at=parse_time(item.get("checkpoint_requested_at")), last_heartbeat_at=parse_time(item.get("last_heartbeat_at")),
        progress=item.get("progress"), exit_code=item.get("exit_code"), reason=item.get("reason", ""),
        log_tail=item.get("log_tail", ""), launched_at=parse_time(item.get("launched_at")),
        started_at=parse_time(item.get("started_at")), finished_at=parse_time(item.get("finished_at")),
        updated_at=parse_time(item.get("updated_at")),
    )


def _attempt_from(item: dict[str, Any]) -> Attempt:
    return Attempt(
        job_id=item["job_id"], index=int(item["index"]), number=int(item["number"]), pool=item["pool"],
        market=Market(item["market"]), instance_id=item.get("instance_id"), launched_at=parse_time(item.get("launched_at")),
        ended_at=parse_time(item.get("ended_at")), outcome=item.get("outcome"),
        scope=Scope(item["scope"]) if item.get("scope") else None, exit_code=item.get("exit_code"),
        exec_seconds=float(item.get("exec_seconds", 0.0)), price_per_hour=item.get("price_per_hour"),
        drained_at=parse_time(item.get("drained_until")),
    )


def _event_from(item: dict[str, Any]) -> TimelineEvent:
    return TimelineEvent(
        job_id=item["job_id"], at=parse_time(item["at"]), kind=item["kind"], event_id=item["event_id"],  # type: ignore[arg-type]
        index=item.get("index"), attempt=item.get("attempt"), detail=item.get("detail", {}),
    )


def encode_token(value: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode() if value else None


def decode_token(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, json.JSONDecodeError):
        raise ValueError("the page token is not one this API gave out") from None
    if not isinstance(value, dict):
        raise ValueError("the page token is not one this API gave out")
    return value


class DynamoStore:
    """The control plane's state in DynamoDB. Takes a boto3 DynamoDB *client* (injected)."""

    def __init__(self, client: Any, table: str):
        self.client = client
        self.table = table

    # ---------- jobs ----------

    def create_job(self, job: Job, tasks: Sequence[dict[str, Any]], event: TimelineEvent) -> bool:
        """Store a job and its tasks; False if a job with that id exists already (idempotent submit)."""
        if self.get_job(job.job_id) is not None:
            return False
        self.batch_put(self._task_item(t, job.created_at) for t in tasks)
        return self._transact([
                {"Put": {"TableName": self.table, "Item": serialize(self._job_item(job)),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Put": {"TableName": self.table, "Item": serialize(self._event_item(event))}},
            ])

    def _job_item(self, job: Job) -> dict[str, Any]:
        return {
            **job_key(job.job_id), "type": "job", "job_id": job.job_id, "name": job.name,
            "spec": json.dumps(job.spec, separators=(",", ":")), "state": job.state, "task_count": job.task_count,
            "has_combine": job.has_combine, "counts": job.counts, "active": job.active, "desired": job.desired,
            "created_at": job.created_at, "updated_at": job.updated_at, "owner": job.owner, "stats": {},
            "list_pk": f"JOBS#{job.state}", "list_sk": f"{iso(job.created_at)}#{job.job_id}",
        }

    @staticmethod
    def _task_item(task: dict[str, Any], now: datetime) -> dict[str, Any]:
        job_id, index, state = task["job_id"], task["index"], task["state"]
        return {
            **task_key(job_id, index), "type": "task", "attempt": 0, "updated_at": now, **task,
            "state_pk": f"{job_id}#{state}#{shard_of(index)}", "state_sk": f"{index:06d}",
            "job_pk": f"{job_id}#{shard_of(index)}", "job_sk": f"{index:06d}",
        }

    def batch_put(self, items: Iterable[dict[str, Any]]) -> int:
        chunks = _chunks((serialize(i) for i in items), 25)
        with ThreadPoolExecutor(BATCH_WRITE_THREADS) as pool:
            return sum(pool.map(self._write_chunk, chunks))

    def _write_chunk(self, chunk: list[dict[str, Any]]) -> int:
        requests = {self.table: [{"PutRequest": {"Item": item}} for item in chunk]}
        calls = 0
        while requests:
            if calls:  # throttled: back off (exponential, jittered) before resending the rest
                time.sleep(min(5.0, 0.05 * 2 ** min(calls, 7)) * (0.5 + random.random()))
            calls += 1
            answer = self.client.batch_write_item(RequestItems=requests)
            requests = answer.get("UnprocessedItems") or {}
        return calls

    def get_job(self, job_id: str) -> Job | None:
        item = self._get(job_key(job_id))
        return _job_from(item) if item else None

    def list_jobs(self, states: Sequence[JobState], limit: int, token: str | None) -> tuple[list[Job], str | None]:
        """Jobs newest first across the given states: one key query per state, merged.

        The page token remembers, per state, the last sort key handed out (or that the state is done).
        """
        cursor = decode_token(token) or {}
        fetched: list[tuple[str, dict[str, Any], str]] = []
        exhausted: set[str] = set()
        for state in states:
            position = cursor.get(state.value)
            if position == "done":
                continue
            values = {":p": f"JOBS#{state}", **({":s": position} if position else {})}
            answer = self.client.query(
                TableName=self.table, IndexName="jobs_by_time", ScanIndexForward=False, Limit=limit,
                KeyConditionExpression="list_pk = :p" + (" AND list_sk < :s" if position else ""),
                ExpressionAttributeValues=serialize(values),
            )
            rows = [deserialize(i) for i in answer.get("Items", [])]
            fetched.extend((row["list_sk"], row, state.value) for row in rows)
            if not answer.get("LastEvaluatedKey"):
                exhausted.add(state.value)
        fetched.sort(key=lambda entry: entry[0], reverse=True)
        page = fetched[:limit]
        next_cursor = {s.value: cursor.get(s.value) for s in states}
        for sort_key, _, state_name in page:
            next_cursor[state_name] = sort_key
        for state_name in exhausted:
            if all(entry[2] != state_name for entry in fetched[limit:]):
                next_cursor[state_name] = "done"
        more = any(v != "done" for v in next_cursor.values())
        # The index holds keys only (job items change on every task move): read the jobs themselves.
        jobs = [_job_from(item) for item in self._hydrate([{"pk": row["pk"], "sk": row["sk"]} for _, row, _ in page])]
        return jobs, encode_token(next_cursor) if more else None

    def set_job_desired(self, job_id: str, desired: Desired, allowed_from: Sequence[Desired], now: datetime) -> bool:
        expr = _Expression()
        expr.set("desired", desired)
        expr.set("updated_at", now)
        expr.condition("attribute_exists(pk)")
        expr.condition_in("desired", [d.value for d in allowed_from])
        return self._update(job_key(job_id), expr)

    def refresh_job_state(self, job_id: str, derive: Any, now: datetime) -> Job | None:
        """Recompute the job's state from its task counts; guarded so a racing count change wins."""
        for _ in range(5):
            item = self._get(job_key(job_id))
            if item is None:
                return None
            job = _job_from(item)
            state = derive(job.counts, job.desired)
            if state == job.state:
                return job
            expr = _Expression()
            expr.set("state", state)
            expr.set("list_pk", f"JOBS#{state}")
            expr.set("updated_at", now)
            expr.condition("{c} = {v}", c="@counts", v=item.get("counts", {}))
            expr.condition("{s} = {old}", s="@state", old=job.state.value)
            if self._update(job_key(job_id), expr):
                return _job_from({**item, "state": state})
        return self.get_job(job_id)

    # ---------- tasks ----------

    def get_task(self, job_id: str, index: int) -> Task | None:
        item = self._get(task_key(job_id, index))
        return task_from(item) if item else None

    def task_environment(self, job_id: str, index: int) -> dict[str, str]:
        item = self._get(task_key(job_id, index))
        return dict(item.get("env", {})) if item else {}

    def tasks_in_state(self, job_id: str, state: TaskState, limit: int) -> list[Task]:
        """Up to `limit` tasks of a job in one state, lowest index first within each shard."""
        found: list[Task] = []
        for shard in range(TASK_SHARDS):
            tasks = self._query_index("by_state", "state_pk", f"{job_id}#{state}#{shard}", limit - len(found))
            found.extend(t for t in tasks if t.state == state)  # the item may have moved on since
            if len(found) >= limit:
                break
        return sorted(found, key=lambda t: t.index)

    def list_tasks(
        self, job_id: str, state: TaskState | None, limit: int, token: str | None
    ) -> tuple[list[Task], str | None]:
        cursor = decode_token(token) or {"shard": 0}
        shard, after = int(cursor.get("shard", 0)), cursor.get("after")
        index, key, prefix = ("by_state", "state_pk", f"{job_id}#{state}#") if state else ("by_job", "job_pk", f"{job_id}#")
        sort_key = "state_sk" if state else "job_sk"
        tasks: list[Task] = []
        while shard < TASK_SHARDS and len(tasks) < limit:
            params: dict[str, Any] = {
                "TableName": self.table, "IndexName": index, "Limit": limit - len(tasks),
                "KeyConditionExpression": f"{key} = :p" + (f" AND {sort_key} > :a" if after else ""),
                "ExpressionAttributeValues": serialize({":p": f"{prefix}{shard}", **({":a": after} if after else {})}),
            }
            answer = self.client.query(**params)
            rows = [deserialize(i) for i in answer.get("Items", [])]
            tasks.extend(t for t in self._tasks_at(rows) if state is None or t.state == state)
            if answer.get("LastEvaluatedKey") and rows:
                after = rows[-1][sort_key]
            else:
                shard, after = shard + 1, None
        more = shard < TASK_SHARDS
        return tasks, encode_token({"shard": shard, "after": after}) if more else None

    def _query_index(self, index: str, key: str, value: str, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        answer = self.client.query(
            TableName=self.table, IndexName=index, Limit=limit, KeyConditionExpression=f"{key} = :p",
            ExpressionAttributeValues=serialize({":p": value}),
        )
        return self._tasks_at([deserialize(i) for i in answer.get("Items", [])])

    def _tasks_at(self, rows: Sequence[dict[str, Any]]) -> list[Task]:
        """The tasks an index query named. Indexes hold keys only, so a heartbeat rewrites none of
        them; the items are read from the table (eventually consistent, as the index itself is)."""
        return [task_from(item) for item in self._hydrate([{"pk": r["pk"], "sk": r["sk"]} for r in rows])]

    def _hydrate(self, keys: Sequence[dict[str, str]], consistent: bool = False) -> list[dict[str, Any]]:
        """Items by key, in the order asked (missing ones left out), 100 keys per BatchGetItem."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for chunk in _chunks(list({(k["pk"], k["sk"]): k for k in keys}.values()), 100):
            request = {self.table: {"Keys": [serialize(k) for k in chunk], "ConsistentRead": consistent}}
            calls = 0
            while request:
                if calls:  # unprocessed keys (throttling): back off before asking again
                    time.sleep(min(2.0, 0.05 * 2 ** min(calls, 6)) * (0.5 + random.random()))
                calls += 1
                answer = self.client.batch_get_item(RequestItems=request)
                for raw in answer.get("Responses", {}).get(self.table, []):
                    item = deserialize(raw)
                    found[(item["pk"], item["sk"])] = item
                request = answer.get("UnprocessedKeys") or {}
        return [found[(k["pk"], k["sk"])] for k in keys if (k["pk"], k["sk"]) in found]

    def apply(self, change: TaskChange, now: datetime, event_detail: dict[str, Any] | None = None) -> bool:
        """Apply one guarded task change with its counts, capacity, attempt record and timeline event.

        Returns False when the task was no longer where `change` found it (nothing is written).
        """
        return self.apply_many([change], now, event_detail)

    def apply_many(
        self, changes: Sequence[TaskChange], now: datetime, event_detail: dict[str, Any] | None = None,
        job_conditions: dict[str, Any] | None = None,
    ) -> bool:
        if not changes:
            return True
        job_id = changes[0].task.job_id
        items: list[dict[str, Any]] = []
        count_deltas: dict[str, int] = {}
        active = 0
        pool_deltas: dict[str, dict[str, float]] = {}
        job_stats: dict[str, float] = {}
        for change in changes:
            items.append({"Update": {"TableName": self.table, "Key": serialize(task_key(job_id, change.task.index)),
                                     **self._task_update(change, now).update()}})
            count_deltas[change.from_state] = count_deltas.get(change.from_state, 0) - 1
            count_deltas[change.to_state] = count_deltas.get(change.to_state, 0) + 1
            active += change.active_delta
            if change.end_attempt is not None:
                items.append(self._end_attempt_item(change, now))
                deltas = pool_deltas.setdefault(change.end_attempt.pool, {})
                end = change.end_attempt
                executed = int(end.launched)
                failed = int(end.scope == Scope.ENVIRONMENT and not end.interrupted) * executed
                for name, amount in (("executions", executed), ("failures", failed),
                                     ("interruptions", int(end.interrupted)), ("exec_seconds", end.exec_seconds),
                                     ("running", -1)):
                    deltas[name] = deltas.get(name, 0) + amount
                if end.launched:
                    for name, amount in attempt_usage(end.pool, change.task.launched_at, change.task.price_per_hour,
                                                      now, executed, failed, int(end.interrupted),
                                                      end.exec_seconds).items():
                        job_stats[name] = job_stats.get(name, 0) + amount
            if change.new_attempt and change.set_fields.get("pool"):
                deltas = pool_deltas.setdefault(change.set_fields["pool"], {})
                deltas["running"] = deltas.get("running", 0) + 1
                # The attempt's record is written with the move that starts it: a crash right after the
                # admission must not leave an attempt that has no record (its end could not be billed).
                items.append({"Put": {"TableName": self.table, "Item": serialize(self._attempt_item(Attempt(
                    job_id, change.task.index, change.task.attempt + 1, change.set_fields["pool"],
                    Market(change.set_fields.get("market") or Market.SPOT), launched_at=now,
                    price_per_hour=change.set_fields.get("price_per_hour")))),
                    "ConditionExpression": "attribute_not_exists(pk)"}})
            items.append({"Put": {"TableName": self.table, "Item": serialize(self._event_item(
                self._change_event(change, now, event_detail)))}})
        items.append(self._job_counts_item(job_id, count_deltas, active, now, job_conditions or {}, job_stats))
        if active:
            items.append(self._account_item(active, (job_conditions or {}).get("account_cap")))
        for pool, deltas in pool_deltas.items():
            expr = _Expression()
            for name, amount in deltas.items():
                if amount:
                    expr.add(name, amount)
            if expr._adds:
                items.append({"Update": {"TableName": self.table, "Key": serialize(pool_key(pool)), **expr.update()}})
        return all(self._transact(chunk) for chunk in _chunks(items, 100))

    def _task_update(self, change: TaskChange, now: datetime) -> _Expression:
        task = change.task
        expr = _Expression()
        expr.condition("{s} = {from_state}", s="@state", from_state=task.state.value)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=task.attempt)
        expr.set("state", change.to_state)
        expr.set("state_pk", f"{task.job_id}#{change.to_state}#{shard_of(task.index)}")
        expr.set("updated_at", now)
        if change.reason:
            expr.set("reason", change.reason)
        if change.new_attempt:
            expr.set("attempt", task.attempt + 1)
            expr.set("launched_at", now)
            expr.remove("instance_id")
        for name, value in change.set_fields.items():
            expr.set(name, value)
        for name in change.remove_fields:
            expr.remove(name)
        for name, amount in change.increments.items():
            expr.add(name, amount)
        if change.to_state in ACTIVE_STATES:
            expr.set("live_pk", f"LIVE#{shard_of(task.index)}")
            expr.set("live_sk", f"{iso(now)}#{task.job_id}#{task.index:06d}")
        else:
            expr.remove("live_pk")
            expr.remove("live_sk")
        if change.to_state in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
            expr.set("finished_at", now)
        if change.to_state == TaskState.RUNNING and change.from_state == TaskState.LAUNCHING:
            expr.set("started_at", now)
        if change.end_attempt and change.end_attempt.scope != Scope.ENVIRONMENT and change.end_attempt.launched:
            expr.set("consecutive_environment_failures", 0)
        return expr

    def _end_attempt_item(self, change: TaskChange, now: datetime) -> dict[str, Any]:
        end = change.end_attempt
        assert end is not None
        expr = _Expression()
        expr.condition("attribute_not_exists({e})", e="@ended_at")
        expr.set("ended_at", now)
        expr.set("outcome", end.outcome)
        expr.set("scope", end.scope.value if end.scope else None)
        expr.set("exit_code", end.exit_code)
        expr.set("exec_seconds", end.exec_seconds)
        return {"Update": {"TableName": self.table, "Key": serialize(attempt_key(change.task.job_id, change.task.index, end.attempt)),
                           **expr.update()}}

    def _job_counts_item(
        self, job_id: str, deltas: dict[str, int], active: int, now: datetime, conditions: dict[str, Any],
        stats: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        expr = _Expression()
        for key, amount in (stats or {}).items():
            if amount:
                expr.add_in_map("stats", key, amount)
        for state, amount in deltas.items():
            if amount:
                expr.add(f"counts.{state}", amount)
        if active:
            expr.add("active", active)
        expr.set("updated_at", now)
        expr.condition("attribute_exists(pk)")
        if "max_active" in conditions and active > 0:
            expr.condition("{a} <= {limit}", a="@active", limit=conditions["max_active"] - active)
        return {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **expr.update()}}

    def _account_item(self, active: int, cap: int | None) -> dict[str, Any]:
        expr = _Expression()
        expr.add("active", active)
        if cap is not None and active > 0:
            expr.condition("attribute_not_exists({a}) OR {a} <= {limit}", a="@active", limit=cap - active)
        return {"Update": {"TableName": self.table, "Key": serialize(ACCOUNT_KEY), **expr.update()}}

    def account_active(self) -> int:
        item = self._get(ACCOUNT_KEY)
        return int(item.get("active", 0)) if item else 0

    @staticmethod
    def _attempt_item(a: Attempt) -> dict[str, Any]:
        return {
            **attempt_key(a.job_id, a.index, a.number), "type": "attempt", "job_id": a.job_id, "index": a.index,
            "number": a.number, "pool": a.pool, "market": a.market, "launched_at": a.launched_at,
            "price_per_hour": a.price_per_hour, "instance_id": a.instance_id,
        }

    def attempts(self, job_id: str, index: int) -> list[Attempt]:
        answer = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues=serialize({":p": task_pk(job_id, index), ":a": "ATTEMPT#"}),
        )
        return [_attempt_from(deserialize(i)) for i in answer.get("Items", [])]

    def bind_instances(self, bindings: Sequence[tuple[str, int, int, str]], pool: str, now: datetime) -> None:
        """Record which instance serves which attempt (job, index, attempt, instance) after one launch
        call: the worker items in batches, the guarded task and attempt updates side by side."""
        self.batch_put({
            "pk": f"WORKER#{instance_id}", "sk": "WORKER", "type": "worker", "instance_id": instance_id,
            "job_id": job_id, "index": index, "attempt": attempt, "pool": pool, "launched_at": now,
        } for job_id, index, attempt, instance_id in bindings)
        if len(bindings) == 1:
            self._bind(*bindings[0])
            return
        with ThreadPoolExecutor(min(BATCH_WRITE_THREADS, len(bindings))) as pool_:
            list(pool_.map(lambda binding: self._bind(*binding), bindings))

    def bind_instance(self, job_id: str, index: int, attempt: int, instance_id: str, pool: str, now: datetime) -> bool:
        """Record which instance serves an attempt (after the launch call answered)."""
        self.client.put_item(TableName=self.table, Item=serialize({
            "pk": f"WORKER#{instance_id}", "sk": "WORKER", "type": "worker", "instance_id": instance_id,
            "job_id": job_id, "index": index, "attempt": attempt, "pool": pool, "launched_at": now,
        }))
        return self._bind(job_id, index, attempt, instance_id)

    def _bind(self, job_id: str, index: int, attempt: int, instance_id: str) -> bool:
        expr = _Expression()
        expr.set("instance_id", instance_id)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        attempt_expr = _Expression()
        attempt_expr.set("instance_id", instance_id)
        self._update(attempt_key(job_id, index, attempt), attempt_expr)
        return self._update(task_key(job_id, index), expr)

    def record_attempt_end(
        self, job_id: str, index: int, attempt: int, outcome: str, scope: Scope | None, exec_seconds: float, now: datetime
    ) -> bool:
        """End an attempt that no longer owns its task (no task move); once only, with its pool statistics."""
        attempt_item = self.client.get_item(TableName=self.table, Key=serialize(attempt_key(job_id, index, attempt)),
                                            ConsistentRead=True).get("Item")
        if attempt_item is None:
            return False
        recorded = deserialize(attempt_item)
        pool = recorded["pool"]
        if recorded.get("ended_at"):
            return self._bill_drain(job_id, index, attempt, recorded, now)
        expr = _Expression()
        expr.condition("attribute_not_exists({e})", e="@ended_at")
        expr.set("ended_at", now)
        expr.set("outcome", outcome)
        expr.set("scope", scope.value if scope else None)
        expr.set("exec_seconds", exec_seconds)
        stats = _Expression()
        for name, amount in (("executions", 1), ("interruptions", int(outcome == "interrupted")),
                             ("exec_seconds", exec_seconds), ("running", -1)):
            if amount:
                stats.add(name, amount)
        usage = _Expression()
        for key, amount in attempt_usage(pool, parse_time(recorded.get("launched_at")), recorded.get("price_per_hour"),
                                         now, 1, 0, int(outcome == "interrupted"), exec_seconds).items():
            if amount:
                usage.add_in_map("stats", key, amount)
        usage.condition("attribute_exists(pk)")
        return self._transact([
                {"Update": {"TableName": self.table, "Key": serialize(attempt_key(job_id, index, attempt)), **expr.update()}},
                {"Update": {"TableName": self.table, "Key": serialize(pool_key(pool)), **stats.update()}},
                {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **usage.update()}},
            ])

    def _bill_drain(self, job_id: str, index: int, attempt: int, recorded: dict[str, Any], now: datetime) -> bool:
        """An interrupted attempt ended (for its task) at the replacement, but its instance ran on until
        its final report: add that time to the job's instance seconds and cost, once."""
        ended_at = parse_time(recorded["ended_at"])
        assert ended_at is not None
        mark = _Expression()
        mark.condition("attribute_not_exists({d})", d="@drained_until")
        mark.set("drained_until", now)
        usage = _Expression()
        for key, amount in drain_usage(recorded["pool"], ended_at, recorded.get("price_per_hour"), now).items():
            usage.add_in_map("stats", key, amount)
        return self._transact([
                {"Update": {"TableName": self.table, "Key": serialize(attempt_key(job_id, index, attempt)), **mark.update()}},
                {"Update": {"TableName": self.table, "Key": serialize(job_key(job_id)), **usage.update()}},
            ])

    def request_checkpoint(self, job_id: str, index: int, attempt: int, at: datetime) -> bool:
        """Ask the running attempt for an early checkpoint (its agent compares the time with its last one)."""
        expr = _Expression()
        expr.set("checkpoint_requested_at", at)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        return self._update(task_key(job_id, index), expr)

    def worker(self, instance_id: str) -> Worker | None:
        item = self._get({"pk": f"WORKER#{instance_id}", "sk": "WORKER"})
        if not item:
            return None
        return Worker(item["instance_id"], item["job_id"], int(item["index"]), int(item["attempt"]), item["pool"],
                      parse_time(item["launched_at"]))  # type: ignore[arg-type]

    def workers(self, instance_ids: Sequence[str]) -> dict[str, Worker]:
        """Worker records of many instances at once (100 per request)."""
        items = self._hydrate([{"pk": f"WORKER#{i}", "sk": "WORKER"} for i in instance_ids])
        return {item["instance_id"]: Worker(item["instance_id"], item["job_id"], int(item["index"]), int(item["attempt"]),
                                            item["pool"], parse_time(item["launched_at"]))  # type: ignore[arg-type]
                for item in items}

    def tasks(self, refs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Task]:
        """Tasks by (job, index), 100 per request; missing ones are left out."""
        return {(t.job_id, t.index): t for t in (task_from(i) for i in self._hydrate([task_key(j, n) for j, n in refs]))}

    def record_heartbeat(self, job_id: str, index: int, attempt: int, at: datetime, fields: dict[str, Any]) -> bool:
        """Liveness and progress; ignores heartbeats of old attempts and ones older than the newest seen."""
        # Only attributes no index projects: one write unit for an item under 1 KB, no index writes.
        # (The reaper finds silent workers from the live index's transition time, then reads this.)
        expr = _Expression()
        expr.set("last_heartbeat_at", at)
        for name, value in fields.items():
            expr.set(name, value)
        expr.condition("{a} = {attempt}", a="@attempt", attempt=attempt)
        expr.condition("{s} = {running}", s="@state", running=TaskState.RUNNING.value)
        expr.condition("attribute_not_exists({h}) OR {h} < {at}", h="@last_heartbeat_at", at=iso(at))
        return self._update(task_key(job_id, index), expr)

    def set_task_desired(self, job_id: str, index: int, desired: Desired, states: Sequence[TaskState]) -> bool:
        expr = _Expression()
        expr.set("desired", desired)
        expr.condition_in("state", [s.value for s in states])
        return self._update(task_key(job_id, index), expr)

    def commit_checkpoint(self, job_id: str, index: int, checkpoint: Checkpoint) -> bool:
        """Move the task's checkpoint pointer forward, only for the owning (or draining) attempt."""
        expr = _Expression()
        expr.set("checkpoint", {
            "seq": checkpoint.seq, "key": checkpoint.key, "attempt": checkpoint.attempt, "size_bytes": checkpoint.size_bytes,
            "committed_at": iso(checkpoint.committed_at), "method": checkpoint.method,
        })
        expr.condition("{a} = {attempt} OR {d} = {attempt2}", a="@attempt", attempt=checkpoint.attempt,
                       d="@draining_attempt", attempt2=checkpoint.attempt)
        expr.condition("attribute_not_exists({c}) OR {cs} < {seq}", c="@checkpoint", cs="@checkpoint.seq", seq=checkpoint.seq)
        return self._update(task_key(job_id, index), expr)

    def stale_live_tasks(self, before: datetime, limit: int) -> list[Task]:
        """Active tasks whose last sign of life (heartbeat, launch or start) is older than `before`.

        The live index is keyed by the time of the task's last move, which heartbeats do not touch
        (that would rewrite the index on every beat); every task silent since `before` is in the
        range, and the items read say which of them really are.
        """
        found: list[Task] = []
        for shard in range(TASK_SHARDS):
            params: dict[str, Any] = {
                "TableName": self.table, "IndexName": "live", "Limit": 100,
                "KeyConditionExpression": "live_pk = :p AND live_sk < :t",
                "ExpressionAttributeValues": serialize({":p": f"LIVE#{shard}", ":t": iso(before)}),
            }
            while len(found) < limit:
                answer = self.client.query(**params)
                rows = [deserialize(i) for i in answer.get("Items", [])]
                found.extend(t for t in self._tasks_at(rows)
                             if t.state in ACTIVE_STATES and (last_sign_of_life(t) or before) < before)
                if not answer.get("LastEvaluatedKey"):
                    break
                params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found[:limit]

    # ---------- pools ----------

    def pool_stats(self, pools: Sequence[str]) -> dict[str, PoolStats]:
        out: dict[str, PoolStats] = {}
        for chunk in _chunks(list(dict.fromkeys(pools)), 100):
            request = {self.table: {"Keys": [serialize(pool_key(p)) for p in chunk]}}
            while request:
                answer = self.client.batch_get_item(RequestItems=request)
                for raw in answer.get("Responses", {}).get(self.table, []):
                    item = deserialize(raw)
                    name = item["pk"].removeprefix("POOL#")
                    out[name] = PoolStats(
                        name, int(item.get("executions", 0)), int(item.get("failures", 0)),
                        int(item.get("interruptions", 0)), float(item.get("exec_seconds", 0)), int(item.get("running", 0)),
                        parse_time(item.get("cooldown_until")),
                    )
                request = answer.get("UnprocessedKeys") or {}
        return out

    def cool_down(self, pool: str, until: datetime) -> None:
        expr = _Expression()
        expr.set("cooldown_until", until)
        expr.condition("attribute_not_exists({c}) OR {c} < {until}", c="@cooldown_until", until=iso(until))
        self._update(pool_key(pool), expr)

    # ---------- timeline ----------

    def _change_event(self, change: TaskChange, now: datetime, detail: dict[str, Any] | None) -> TimelineEvent:
        task = change.task
        attempt = task.attempt + 1 if change.new_attempt else task.attempt
        body = {"from": task.state.value, "to": change.to_state.value, **({"reason": change.reason} if change.reason else {})}
        if change.set_fields.get("pool"):
            body["pool"] = change.set_fields["pool"]
        body.update(detail or {})
        return TimelineEvent(task.job_id, now, change.event, f"{task.index}-{attempt}-{change.event}-{task.state}",
                             task.index, attempt, body)

    def _event_item(self, event: TimelineEvent) -> dict[str, Any]:
        shard = shard_of(event.index or 0)
        return {
            "pk": f"EVENTS#{event.job_id}#{shard}", "sk": f"{iso(event.at)}#{event.event_id}", "type": "event",
            "job_id": event.job_id, "at": event.at, "kind": event.kind, "event_id": event.event_id,
            "index": event.index, "attempt": event.attempt, "detail": event.detail,
        }

    def add_event(self, event: TimelineEvent) -> None:
        self.client.put_item(TableName=self.table, Item=serialize(self._event_item(event)))

    def add_events(self, events: Sequence[TimelineEvent]) -> None:
        self.batch_put(self._event_item(e) for e in events)

    def timeline(self, job_id: str, limit: int, after: str | None = None) -> list[TimelineEvent]:
        events: list[tuple[str, TimelineEvent]] = []
        for shard in range(TASK_SHARDS):
            params: dict[str, Any] = {
                "TableName": self.table, "Limit": limit, "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": serialize({":p": f"EVENTS#{job_id}#{shard}"}),
            }
            if after:
                params["KeyConditionExpression"] += " AND sk > :a"
                params["ExpressionAttributeValues"] = serialize({":p": f"EVENTS#{job_id}#{shard}", ":a": after})
            for raw in self.client.query(**params).get("Items", []):
                item = deserialize(raw)
                events.append((item["sk"], _event_from(item)))
        events.sort(key=lambda pair: pair[0])
        return [e for _, e in events[:limit]]

    # ---------- plumbing ----------

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        """One all-or-nothing write; False when a guard failed (someone moved first), nothing written."""
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if _is_conflict(error):
                return False
            raise
        return True

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        answer = self.client.get_item(TableName=self.table, Key=serialize(key), ConsistentRead=True)
        return deserialize(answer["Item"]) if "Item" in answer else None

    def _update(self, key: dict[str, str], expr: _Expression) -> bool:
        try:
            self.client.update_item(TableName=self.table, Key=serialize(key), **expr.update())
        except ClientError as error:
            if _is_conflict(error):
                return False
            raise
        return True


def _is_conflict(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons") or []
        # Only a failed condition is a conflict; throttling or a transaction clash is a real error to retry.
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons) or not reasons
    return False


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
