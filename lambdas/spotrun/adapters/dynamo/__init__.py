"""The store: every job, task, attempt, worker, pool and timeline item in one DynamoDB table.

One part per entity, all on the same table plumbing (`table.Table`): jobs (`jobs`), tasks (`tasks`), those
stored lazily (`pending`) and their guarded moves (`moves`), attempts and the workers serving them (`attempts`), pools
(`pools`), the timeline (`timeline`), worker image faults (`images`) and moves scheduled before an
instance's scheduled change (`scheduled`). Below them: the key layout (`keys`), the wire codec
(`codec`), the expression builder (`expressions`) and the item mappers (`items`). `DynamoStore` is
all of them together, the `spotrun.ports.Store` the use cases see.
"""

from __future__ import annotations

from spotrun.adapters.dynamo.attempts import AttemptStore
from spotrun.adapters.dynamo.codec import UnstorableValue, deserialize, serialize
from spotrun.adapters.dynamo.images import ImageFaultStore
from spotrun.adapters.dynamo.jobs import JobStore
from spotrun.adapters.dynamo.keys import TASK_SHARDS, task_pk
from spotrun.adapters.dynamo.moves import TaskMoves
from spotrun.adapters.dynamo.pending import PendingTaskStore
from spotrun.adapters.dynamo.pools import PoolStore
from spotrun.adapters.dynamo.scheduled import ScheduledMoveStore
from spotrun.adapters.dynamo.table import BATCH_WRITE_THREADS
from spotrun.adapters.dynamo.tasks import TaskStore
from spotrun.adapters.dynamo.timeline import TimelineStore


class DynamoStore(JobStore, TaskStore, PendingTaskStore, TaskMoves, AttemptStore, PoolStore, TimelineStore,
                  ImageFaultStore, ScheduledMoveStore):
    """The control plane's state in DynamoDB. Takes a boto3 DynamoDB *client* (injected) and the table name."""


__all__ = ["BATCH_WRITE_THREADS", "TASK_SHARDS", "DynamoStore", "UnstorableValue", "deserialize", "serialize", "task_pk"]
