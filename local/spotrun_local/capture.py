"""The state journal's capture: what a mutating request to moto changed, journaled before it is answered.

A WSGI middleware right in front of moto's backends (`spotrun_local.endpoint.moto_server` puts it
innermost, inside the one-DynamoDB-request-at-a-time lock). Once moto answered a request with
success, and before the answer leaves, it appends to the journal (spotrun_local.persistence):
- DynamoDB PutItem, UpdateItem, DeleteItem, BatchWriteItem and TransactWriteItems: the image of
  every item the request names (or its absence), read from moto's backend under the DynamoDB lock,
  so it is exactly the image this request left;
- S3 object writes (PUT, presigned PUT, CopyObject, CompleteMultipartUpload, DELETE,
  DeleteObjects, an object's ?tagging or ?acl): each key's current body, ETag and metadata, or its
  absence. Parts and the start or abort of a multipart upload change no object and are skipped;
- SQS (any operation but Get*/List*: a receive can move a message to its dead-letter queue), SNS
  Publish and EventBridge PutEvents (both deliver into queues): the messages that appeared in or
  left any queue since the journal last looked.
Reading the *current* state and journaling it happen under one lock per entity (a stripe of keys
for S3, one for all queues), after the request: whichever step runs last reads a state that
includes every change answered before it, so the journal's newest image is always moto's.
Everything else (creating resources, EC2, IAM, STS, reads) passes through untouched. If the
journal cannot be written, the request is answered 503 and so is every change after it: spotrun
local then refuses changes it could not keep, loudly, rather than lose them at the next restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from spotrun_local.iam_requests import HttpRequest, Unreadable, caller, operation_of, s3_location
from spotrun_local.persistence import StateJournal, message_record

log = logging.getLogger("spotrun.local.state")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
QUEUE_WRITES = {"sns": frozenset({"Publish", "PublishBatch"}), "events": frozenset({"PutEvents"})}
S3_STRIPES = 64


@dataclass(frozen=True)
class Change:
    """What a request may change: the lock its journaling takes, and how to read the new images."""

    lock: Any
    records: Callable[[], list[dict[str, Any]]]


class Capture:
    def __init__(self, journal: StateJournal, app: WsgiApp):
        self.journal = journal
        self.app = app
        self._s3_locks = [threading.Lock() for _ in range(S3_STRIPES)]
        self._queue_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.journal.active:
            return self.app(environ, start_response)
        try:
            change = self._change(HttpRequest(environ))
        except (Unreadable, LookupError, TypeError, AttributeError, ValueError, ElementTree.ParseError):
            change = None  # a request nobody can read: moto refuses it and nothing changes
        if change is None:
            return self.app(environ, start_response)
        if self.journal.failed is not None:
            return _unavailable(start_response, self.journal.failed)
        answer: list[Any] = []
        output: list[bytes] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            answer[:] = [status, headers, exc_info]
            return output.append

        result = self.app(environ, hold)
        try:
            output.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        if answer and answer[0].startswith("2"):
            try:
                self._journal(change)
            except Exception as error:  # noqa: BLE001 - answered loudly below and on every later change
                log.exception("the state journal failed; spotrun local accepts no more changes")
                self.journal.failed = self.journal.failed or error
                return _unavailable(start_response, error)
        start_response(*answer)
        return [b"".join(output)]

    def _journal(self, change: Change) -> None:
        with change.lock:
            records = change.records()
            try:
                self.journal.append(records)
            except BaseException:
                for record in records:
                    if record.get("blob"):
                        self.journal.forget_blob(record["blob"])
                raise

    # ------------------------------------------------------------------ what a request changes

    def _change(self, request: HttpRequest) -> Change | None:
        service = (caller(request.environ) or ("", ""))[1]
        if service == "dynamodb":
            return self._dynamodb(request)
        if service == "s3":
            return self._s3(request)
        if service == "sqs":
            name = operation_of(request)
            return None if name.startswith(("Get", "List")) else Change(self._queue_lock, self._queue_records)
        if service in QUEUE_WRITES and operation_of(request) in QUEUE_WRITES[service]:
            return Change(self._queue_lock, self._queue_records)
        return None

    def _dynamodb(self, request: HttpRequest) -> Change | None:
        name = operation_of(request)
        if name not in DYNAMODB_WRITES:
            return None
        body = request.json()
        named: list[tuple[str, dict[str, Any]]] = []  # (table, an item or a key: the key attributes are in both)
        if name == "PutItem":
            named.append((body["TableName"], body["Item"]))
        elif name in ("UpdateItem", "DeleteItem"):
            named.append((body["TableName"], body["Key"]))
        elif name == "BatchWriteItem":
            for table, writes in body["RequestItems"].items():
                for write in writes:
                    if "PutRequest" in write:
                        named.append((table, write["PutRequest"]["Item"]))
                    elif "DeleteRequest" in write:
                        named.append((table, write["DeleteRequest"]["Key"]))
        else:
            for entry in body["TransactItems"]:
                for kind, field in (("Put", "Item"), ("Update", "Key"), ("Delete", "Key")):
                    if kind in entry:
                        named.append((entry[kind]["TableName"], entry[kind][field]))
        return Change(contextlib.nullcontext(), lambda: self._item_records(named))

    def _item_records(self, named: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        from moto.dynamodb.models import dynamodb_backends

        backend = dynamodb_backends[self.journal.account][self.journal.region]
        records = []
        for table_name, attributes in named:
            table = backend.get_table(table_name)
            key = {name: attributes[name] for name in (table.hash_key_attr, table.range_key_attr) if name}
            item = backend.get_item(table.name, key)
            records.append({"t": "ddb", "table": table.name, "key": key,
                            "item": item.to_json()["Attributes"] if item is not None else None})
        return records

    def _s3(self, request: HttpRequest) -> Change | None:
        keys = written_keys(request)
        if not keys:
            return None
        stripes = sorted({zlib.crc32(f"{bucket}/{key}".encode()) % S3_STRIPES for bucket, key in keys})
        return Change(_all_of([self._s3_locks[n] for n in stripes]), lambda: [self._object_record(*k) for k in keys])

    def _object_record(self, bucket: str, key: str) -> dict[str, Any]:
        from moto.s3.models import s3_backends

        stored = s3_backends[self.journal.account]["aws"].get_object(bucket, key)
        if stored is None:  # deleted (or a delete marker in a versioned bucket)
            return {"t": "s3", "bucket": bucket, "key": key, "blob": None}
        return {"t": "s3", "bucket": bucket, "key": key, **self.journal.store_blob(stored.value),
                "etag": stored.etag.strip('"'), "meta": {str(k): str(v) for k, v in stored.metadata.items()}}

    def _queue_records(self) -> list[dict[str, Any]]:
        from moto.sqs.models import sqs_backends

        current = {}
        for name, queue in list(sqs_backends[self.journal.account][self.journal.region].queues.items()):
            for message in list(queue._messages):  # a copy: other requests change the list meanwhile
                current[(name, message.id)] = message
        known = self.journal.known_messages()
        records = [message_record(queue, current[(queue, id_)]) for queue, id_ in current.keys() - known]
        records += [{"t": "sqs", "queue": queue, "id": id_, "message": None} for queue, id_ in known - current.keys()]
        return records


def written_keys(request: HttpRequest) -> list[tuple[str, str]]:
    """The (bucket, key)s an S3 request may change the current object of."""
    bucket, key = s3_location(request)
    method, query = request.method, request.query
    if not bucket or method not in ("PUT", "POST", "DELETE"):
        return []
    if not key:
        if method == "POST" and "delete" in query:  # DeleteObjects
            keys = []
            for entry in ElementTree.fromstring(request.body()).iter():
                if entry.tag.rpartition("}")[2] == "Object":
                    fields = {child.tag.rpartition("}")[2]: child.text or "" for child in entry}
                    keys.append((bucket, fields["Key"]))
            return keys
        return []  # bucket configuration: provisioned again at each start
    if "uploadId" in query:  # only CompleteMultipartUpload makes an object; parts and aborts do not
        return [(bucket, key)] if method == "POST" else []
    if method == "POST" and "uploads" in query:
        return []
    return [(bucket, key)]


@contextlib.contextmanager
def _all_of(locks: list[threading.Lock]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for lock in locks:  # in stripe order: two requests never wait for each other's stripes
            stack.enter_context(lock)
        yield


def _unavailable(start_response: StartResponse, error: BaseException) -> list[bytes]:
    body = json.dumps({"__type": "ServiceUnavailable", "message": f"spotrun local cannot keep changes: its state "
                       f"journal failed ({type(error).__name__}: {error}); see its log"}).encode()
    start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body)))])
    return [body]
