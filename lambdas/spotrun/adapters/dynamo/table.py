"""The table's plumbing: reads by key, guarded writes, batches with back-off, conflicts told apart.

Every state change is a transaction or update whose condition pins the state and attempt it was
decided on; a failed condition means someone else moved first, and the caller re-reads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from spotrun.adapters.dynamo.codec import deserialize, serialize
from spotrun.adapters.dynamo.expressions import Expression

BATCH_WRITE_THREADS = 16


class Table:
    """The plumbing every entity's part of the store shares: one table, reached through a boto3
    DynamoDB *client* (injected); guarded writes that answer False when a guard failed."""

    def __init__(self, client: Any, table: str):
        self.client = client
        self.table = table

    def batch_put(self, items: Iterable[dict[str, Any]]) -> int:
        batches = chunks((serialize(i) for i in items), 25)
        with ThreadPoolExecutor(BATCH_WRITE_THREADS) as pool:
            return sum(pool.map(self._write_chunk, batches))

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

    def _put(self, item: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.table, Item=serialize(item))

    def _hydrate(self, keys: Sequence[dict[str, str]], consistent: bool = False) -> list[dict[str, Any]]:
        """Items by key, in the order asked (missing ones left out), 100 keys per BatchGetItem."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for chunk in chunks(list({(k["pk"], k["sk"]): k for k in keys}.values()), 100):
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

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        """One all-or-nothing write; False when a guard failed (someone moved first), nothing written."""
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if is_conflict(error):
                return False
            raise
        return True

    def _get(self, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        answer = self.client.get_item(TableName=self.table, Key=serialize(key), ConsistentRead=consistent)
        return deserialize(answer["Item"]) if "Item" in answer else None

    def _update(self, key: dict[str, str], expr: Expression) -> bool:
        try:
            self.client.update_item(TableName=self.table, Key=serialize(key), **expr.update())
        except ClientError as error:
            if is_conflict(error):
                return False
            raise
        return True


def is_conflict(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons") or []
        # Only a failed condition is a conflict; throttling or a transaction clash is a real error to retry.
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons) or not reasons
    return False


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
