"""Counting AWS clients, boto3 clients answered locally, and DynamoDB capacity-unit estimates.

Counts are measured: every request the product code makes through a wrapped client is recorded by
service, operation and caller, in order. Capacity units are estimated, not measured (moto does
not bill): from the items' sizes by DynamoDB's published sizing rules, with the before and after
images of each written item read back from the store outside the count:
- item size: attribute names + values (strings as UTF-8, numbers ~1 byte per 2 digits + 1, maps and
  lists 3 bytes + 1 per element);
- writes: 1 WRU per started KB of the larger of the before/after images, twice inside
  TransactWriteItems; each global secondary index whose key is present before or after adds 1 write of
  its entry (the projection: keys only, or the whole item for ALL) when the entry changed (2 when its
  key changed: delete + put), at the standard rate;
- reads: 1 RRU per started 4 KB for a strongly consistent item, half for eventually consistent ones;
  a query rounds the sum of the items it returns (minimum one unit); GSI reads are eventual.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from spotrun import resources

INDEX_KEYS = tuple((i.name, i.partition_key, i.sort_key) for i in resources.TABLE.indexes)
PROJECTIONS = {i.name: i.projection for i in resources.TABLE.indexes}
TABLE_KEYS = (resources.TABLE.partition_key, resources.TABLE.sort_key)


# ----------------------------------------------------------------------------- sizing

def value_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB AttributeValue (wire form) without its name."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        digits = Decimal(inner).normalize().as_tuple().digits
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(value_size({"N": n}) for n in inner)
    return sum(len(b) for b in inner)  # BS


def item_size(item: dict[str, Any] | None) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


@dataclass
class Units:
    wru: float = 0.0  # table writes (transactional ones doubled)
    gsi_wru: float = 0.0  # index propagation writes
    rru: float = 0.0
    bytes_written: int = 0

    def add(self, other: Units) -> None:
        self.wru += other.wru
        self.gsi_wru += other.gsi_wru
        self.rru += other.rru
        self.bytes_written += other.bytes_written


def write_units(before: dict[str, Any] | None, after: dict[str, Any] | None, transactional: bool = False) -> Units:
    """Units of one item write, from the item's images before and after (wire form; None = absent)."""
    size_before, size_after = item_size(before), item_size(after)
    units = Units(wru=_units(max(size_before, size_after), 1024) * (2 if transactional else 1),
                  bytes_written=size_after)
    for name, pk, sk in INDEX_KEYS:
        key_before = (before[pk], before[sk]) if before and pk in before and sk in before else None
        key_after = (after[pk], after[sk]) if after and pk in after and sk in after else None
        if key_before is None and key_after is None:
            continue
        entry_before, entry_after = _projected(name, before, (pk, sk)), _projected(name, after, (pk, sk))
        if key_before is None:
            units.gsi_wru += _units(item_size(entry_after), 1024)
        elif key_after is None:
            units.gsi_wru += _units(item_size(entry_before), 1024)
        elif key_before != key_after:
            units.gsi_wru += _units(item_size(entry_before), 1024) + _units(item_size(entry_after), 1024)
        elif entry_before != entry_after:  # only a change of what the index projects writes it
            units.gsi_wru += _units(item_size(entry_after), 1024)
    return units


def _projected(index: str, image: dict[str, Any] | None, index_keys: tuple[str, str]) -> dict[str, Any]:
    """What the index holds of an item: everything (ALL) or the table's and the index's keys."""
    if not image:
        return {}
    if PROJECTIONS[index] == "ALL":
        return image
    return {k: image[k] for k in (*TABLE_KEYS, *index_keys) if k in image}


def read_units(items: list[dict[str, Any]], consistent: bool, per_item: bool = False) -> float:
    factor = 1.0 if consistent else 0.5
    if per_item:
        return factor * sum(_units(item_size(i), 4096) for i in items) if items else factor
    return factor * _units(sum(item_size(i) for i in items), 4096)


# ----------------------------------------------------------------------------- the call log

class Call(NamedTuple):
    service: str
    operation: str
    size: int  # items of a batch or transaction, instances of a launch, else 1
    actor: str  # who made it: a function's name, "agent", ...


@dataclass
class CallLog:
    """Every request, in order, with who made it and (for DynamoDB) estimated units per actor."""

    calls: list[Call] = field(default_factory=list)
    units: dict[str, Units] = field(default_factory=dict)  # actor -> DynamoDB units
    actor: str = ""  # set by whoever drives the code (a handler wrapper, the agent stand-in)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, service: str, operation: str, size: int = 1) -> None:
        with self._lock:
            self.calls.append(Call(service, operation, size, self.actor))

    def charge(self, units: Units) -> None:
        with self._lock:
            self.units.setdefault(self.actor, Units()).add(units)

    def counts(self, actor: str | None = None) -> dict[str, int]:
        found = Counter(f"{c.service}:{c.operation}" for c in self.calls if actor in (None, c.actor))
        return dict(sorted(found.items()))

    def total_units(self) -> Units:
        total = Units()
        for units in self.units.values():
            total.add(units)
        return total


# ----------------------------------------------------------------------------- counting proxies

class CountingClient:
    """Wraps a boto3 client: each API call (and each paginator page) is recorded in the log."""

    def __init__(self, client: Any, service: str, log: CallLog):
        self._client, self._service, self.log = client, service, log
        self._operations = client.meta.method_to_api_mapping

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name == "get_paginator":
            return lambda operation: _CountingPaginator(attribute(operation), self._service,
                                                        self._operations[operation], self.log)
        if name not in self._operations:
            return attribute
        return lambda **params: self._call(name, attribute, params)

    def _call(self, name: str, method: Any, params: dict[str, Any]) -> Any:
        self.log.record(self._service, self._operations[name], _size_of(name, params))
        return method(**params)


def _size_of(name: str, params: dict[str, Any]) -> int:
    if name == "run_instances":
        return int(params.get("MaxCount", 1))
    if name == "batch_write_item":
        return sum(len(v) for v in params["RequestItems"].values())
    if name == "transact_write_items":
        return len(params["TransactItems"])
    return 1


class _CountingPaginator:
    def __init__(self, paginator: Any, service: str, operation: str, log: CallLog):
        self._paginator, self._service, self._operation, self.log = paginator, service, operation, log

    def paginate(self, **params: Any) -> Any:
        for page in self._paginator.paginate(**params):
            self.log.record(self._service, self._operation)
            yield page


class MeteredDynamo(CountingClient):
    """A counting DynamoDB client that also estimates capacity units (see the module docstring).

    Before/after images are read with `read_image(table, key)` (default: a GetItem through the
    unwrapped client), outside the count; the time spent doing so is kept in `metering_seconds`, so
    callers can take it out of their wall times.
    """

    def __init__(self, client: Any, log: CallLog, read_image: Any = None, service: str = "dynamodb"):
        super().__init__(client, service, log)
        self.metering_seconds = 0.0
        self._image = read_image or (
            lambda table, key: client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item"))

    def _call(self, name: str, method: Any, params: dict[str, Any]) -> Any:
        self.log.record(self._service, self._operations[name], _size_of(name, params))
        started = time.perf_counter()
        writes = self._writes(name, params)
        befores = [self._image(table, key) for table, key, _, _ in writes]
        self.metering_seconds += time.perf_counter() - started
        answer = method(**params)
        started = time.perf_counter()
        units = Units()
        for (table, key, item, transactional), before in zip(writes, befores, strict=True):
            units.add(write_units(before, item if item is not None else self._image(table, key), transactional))
        units.rru += self._reads(name, params, answer)
        self.log.charge(units)
        self.metering_seconds += time.perf_counter() - started
        return answer

    @staticmethod
    def _writes(name: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any] | None, bool]]:
        """(table, key, new item if known, transactional) of each item the request writes."""
        def key_of(item: dict[str, Any]) -> dict[str, Any]:
            return {"pk": item["pk"], "sk": item["sk"]}

        if name == "put_item":
            return [(params["TableName"], key_of(params["Item"]), params["Item"], False)]
        if name == "update_item":
            return [(params["TableName"], params["Key"], None, False)]
        if name == "batch_write_item":
            return [(table, key_of(r["PutRequest"]["Item"]), r["PutRequest"]["Item"], False)
                    for table, requests in params["RequestItems"].items() for r in requests if "PutRequest" in r]
        if name == "transact_write_items":
            out = []
            for action in params["TransactItems"]:
                if "Put" in action:
                    out.append((action["Put"]["TableName"], key_of(action["Put"]["Item"]), action["Put"]["Item"], True))
                elif "Update" in action:
                    out.append((action["Update"]["TableName"], action["Update"]["Key"], None, True))
            return out
        return []

    @staticmethod
    def _reads(name: str, params: dict[str, Any], answer: dict[str, Any]) -> float:
        if name == "get_item":
            return read_units([answer["Item"]] if "Item" in answer else [], bool(params.get("ConsistentRead")), True)
        if name == "query":
            consistent = bool(params.get("ConsistentRead")) and "IndexName" not in params
            return read_units(answer.get("Items", []), consistent)
        if name == "batch_get_item":
            keys = sum(len(v["Keys"]) for v in params["RequestItems"].values())
            found = [i for items in answer.get("Responses", {}).values() for i in items]
            consistent = any(v.get("ConsistentRead") for v in params["RequestItems"].values())
            missing = max(0, keys - len(found)) * (1.0 if consistent else 0.5)
            return read_units(found, consistent, True) + missing
        return 0.0


# ----------------------------------------------------------------------------- fakes

_LOCAL_ANSWERS = {  # operation -> response body; anything else answers "{}"
    "BatchWriteItem": b'{"UnprocessedItems": {}}',
    "Query": b'{"Items": [], "Count": 0, "ScannedCount": 0}',
    "Publish": b"<PublishResponse><PublishResult><MessageId>local</MessageId></PublishResult></PublishResponse>",
    "PublishBatch": b"<PublishBatchResponse><PublishBatchResult><Successful/><Failed/></PublishBatchResult>"
                    b"</PublishBatchResponse>",
}


class _Body:
    def __init__(self, content: bytes):
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content


def local_client(service: str, latency_seconds: float = 0.0, validate: bool = False) -> Any:
    """A real boto3 client (parameter validation, serialization, signing, retries, parsing) whose HTTP
    send is answered here with success after `latency_seconds` (time.sleep releases the GIL, so
    concurrent callers overlap as they would against the service). Nothing is stored: every GetItem
    answers 'no item'."""
    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.config import Config

    client = boto3.session.Session().client(
        service, region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "max_attempts": 6}, max_pool_connections=16,
                      parameter_validation=validate),
    )

    def answer(request: Any, event_name: str, **_: Any) -> AWSResponse:
        if latency_seconds:
            time.sleep(latency_seconds)
        return AWSResponse(request.url, 200, {}, _Body(_LOCAL_ANSWERS.get(event_name.rsplit(".", 1)[-1], b"{}")))

    client.meta.events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}", answer)
    return client


class FakeDynamo(CountingClient):
    """Counting DynamoDB on `local_client`; keeps the written items (references) for a unit estimate
    after the timed part (new items: no before image)."""

    def __init__(self, log: CallLog, latency_seconds: float = 0.0, validate: bool = False):
        super().__init__(local_client("dynamodb", latency_seconds, validate), "dynamodb", log)
        self.written: list[tuple[dict[str, Any], bool]] = []  # (item, transactional)

    def _call(self, name: str, method: Any, params: dict[str, Any]) -> Any:
        self.written.extend(self._new_items(name, params))
        return super()._call(name, method, params)

    @staticmethod
    def _new_items(name: str, params: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
        if name == "batch_write_item":
            yield from ((r["PutRequest"]["Item"], False) for rs in params["RequestItems"].values() for r in rs)
        elif name == "transact_write_items":
            yield from ((a["Put"]["Item"], True) for a in params["TransactItems"] if "Put" in a)
        elif name == "put_item":
            yield params["Item"], False

    def units(self) -> Units:
        total = Units()
        for item, transactional in self.written:
            total.add(write_units(None, item, transactional))
        total.rru = float(sum(1 for c in self.log.calls if c.operation == "GetItem"))  # strongly consistent misses
        return total


def fake_sns(log: CallLog, latency_seconds: float = 0.0) -> CountingClient:
    return CountingClient(local_client("sns", latency_seconds, validate=True), "sns", log)
