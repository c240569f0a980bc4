"""The table's key layout: every item of the control plane in one DynamoDB table (pk / sk).

  JOB#<job>                 JOB              the job; GSI jobs_by_time: JOBS#<state> / <created>#<job>
  TASK#<job>#<index>        TASK             a task; GSIs by_state (<job>#<state>#<shard>) and
                                             by_job (<job>#<shard>), live (LIVE#<shard>) while active
  TASK#<job>#<index>        ATTEMPT#<n>      one attempt of the task
  WORKER#<instance>         WORKER           which attempt an instance serves
  POOL#<type>@<zone>        STATS            per-pool statistics, load and cool-down
  ACCOUNT                   CAPACITY         tasks holding a worker, account-wide (the cap)
  EVENTS#<job>#<shard>      <time>#<id>      the job's timeline
  IMAGE#<ami>               FAULT#<method>   a worker image that cannot run a checkpoint method
  MOVES                     MOVE#<instance>  a task to move off an instance before a scheduled change

Tasks live in their own partitions and every task index is sharded over TASK_SHARDS index keys,
so a 100,000-task job makes no hot partition. The task role's policy (`spotrun.access`) names the
task partition key too: a worker may read its own partition only.
"""

from __future__ import annotations

TASK_SHARDS = 16

Key = dict[str, str]


def shard_of(index: int) -> int:
    return index % TASK_SHARDS


def job_key(job_id: str) -> Key:
    return {"pk": f"JOB#{job_id}", "sk": "JOB"}


def jobs_by_time_pk(state: str) -> str:
    """The jobs_by_time partition of a job state."""
    return f"JOBS#{state}"


def task_pk(job_id: str, index: int) -> str:
    return f"TASK#{job_id}#{index:06d}"


def task_key(job_id: str, index: int) -> Key:
    return {"pk": task_pk(job_id, index), "sk": "TASK"}


def by_state_pk(job_id: str, state: str, shard: int) -> str:
    """The by_state partition of one shard of a job's tasks in one state."""
    return f"{job_id}#{state}#{shard}"


def by_job_pk(job_id: str, shard: int) -> str:
    """The by_job partition of one shard of a job's tasks."""
    return f"{job_id}#{shard}"


def index_sort_key(index: int) -> str:
    return f"{index:06d}"


def live_pk(shard: int) -> str:
    """The live index's partition of one shard of the tasks holding a worker."""
    return f"LIVE#{shard}"


def attempt_key(job_id: str, index: int, number: int) -> Key:
    return {"pk": task_pk(job_id, index), "sk": f"ATTEMPT#{number:04d}"}


def worker_key(instance_id: str) -> Key:
    return {"pk": f"WORKER#{instance_id}", "sk": "WORKER"}


def pool_key(pool: str) -> Key:
    return {"pk": f"POOL#{pool}", "sk": "STATS"}


def events_pk(job_id: str, shard: int) -> str:
    return f"EVENTS#{job_id}#{shard}"


ACCOUNT_KEY: Key = {"pk": "ACCOUNT", "sk": "CAPACITY"}


def image_fault_key(image_id: str, method: str) -> Key:
    return {"pk": f"IMAGE#{image_id}", "sk": f"FAULT#{method}"}


MOVES_PK = "MOVES"  # one partition: scheduled changes (AWS Health) touch few instances at a time


def scheduled_move_key(instance_id: str) -> Key:
    return {"pk": MOVES_PK, "sk": f"MOVE#{instance_id}"}
