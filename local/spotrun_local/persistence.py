"""Durable local state: what the local runtime's moto holds, kept in a directory and put back at start.

Kept: DynamoDB items, S3 objects (the current version of each key; bodies as files) and SQS
messages (every message of every queue: visible, in flight or delayed). Not kept, on purpose:
- EC2: the local instances die with the runtime, like the machines of a room that lost power.
  Nothing comes back to life as an agent; the reaper finds their attempts lost (EC2 answers
  "terminated" for instances it does not know) and the tasks resume from their last committed
  checkpoints on new instances.
- What `spotrun.provision` creates (table, bucket, queues, topics, subscriptions, rules, roles,
  network, launch template): the runtime creates it again, with the same names, at every start.
- In-flight multipart uploads, noncurrent S3 versions, SQS receive counts and visibility: an
  upload that was not completed was not committed, and a message comes back visible (consumers
  are idempotent).

How: a journal of *state images* (docs/decisions.md, "A journal of state images for the local
runtime"). `spotrun_local.capture` sits at the moto server's WSGI entry; once moto has answered a
mutating request with success, and before that answer leaves, it appends the new state of what
the request touched: a DynamoDB item's image (or its absence), an S3 object's body (a file under
`blobs/`) with its ETag and metadata, or the messages that appeared in or left a queue. A client
told "done" is therefore journaled; a request whose answer never left may or may not be, exactly
like a lost response in AWS (clients retry). Images, not requests: putting them back is idempotent
and deterministic (no random ids, receipt handles or clocks to re-derive), and only the newest
image of each entity matters, so the journal compacts to the current state.

Each record is one JSON line written with one write(2) on an O_APPEND descriptor: it survives the
death of any process at once (the kernel has it), not a power cut (no fsync per record; blobs are
renamed into place, and their SHA-256 is checked when they are put back). A torn last line (the
process died in the write, before answering) is ignored; an unreadable line anywhere else stops
the start with an error naming it, rather than start from a state that silently lost something.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun_local.endpoint import ACCOUNT, REGION

log = logging.getLogger("spotrun.local.state")

JOURNAL = "journal.jsonl"
BLOBS = "blobs"
COMPACT_AFTER_BYTES = 64 << 20  # rewrite the journal as the current state once it grows past this


class JournalError(RuntimeError):
    """The state directory cannot be used as it is; the message says what is wrong and where."""


@dataclass(frozen=True)
class RestoreReport:
    items: int
    objects: int
    messages: int
    blob_bytes: int
    journal_bytes: int
    seconds: float


def item_key(table: str, key: dict[str, Any]) -> tuple[str, str]:
    return table, json.dumps(key, sort_keys=True, separators=(",", ":"))


def _entity(record: dict[str, Any]) -> tuple[str, tuple[str, str]]:
    kind = record["t"]
    if kind == "ddb":
        return kind, item_key(record["table"], record["key"])
    if kind == "s3":
        return kind, (record["bucket"], record["key"])
    if kind == "sqs":
        return kind, (record["queue"], record["id"])
    raise ValueError(f"unknown record type {kind!r}")


_PRESENCE = {"ddb": "item", "s3": "blob", "sqs": "message"}  # the field that is empty when the entity is gone


def _present(record: dict[str, Any]) -> bool:
    return bool(record.get(_PRESENCE[record["t"]]))


class StateJournal:
    """The journal and its blobs in `directory`, and the current state they describe (the mirror)."""

    def __init__(self, directory: Path, *, account: str = ACCOUNT, region: str = REGION,
                 compact_after_bytes: int = COMPACT_AFTER_BYTES):
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL
        self.blobs = self.directory / BLOBS
        self.account, self.region = account, region
        self.compact_after_bytes = compact_after_bytes
        # kind -> entity -> its newest record; only entities that exist (a deletion removes the entry)
        self.mirror: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"ddb": {}, "s3": {}, "sqs": {}}
        self.active = False  # capture journals only once the state was put back into moto
        self.failed: BaseException | None = None
        self.records_written = 0
        self.bytes_written = 0
        self.compactions = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._compacted_size = 0
        self._loaded_bytes = 0

    # ------------------------------------------------------------------ start

    def load(self) -> None:
        """Read the journal into the mirror (before anything starts: an unusable directory stops here)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(exist_ok=True)
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        self._loaded_bytes = len(raw)
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                record = json.loads(line)
                self._apply(record)
            except (ValueError, KeyError, TypeError) as error:
                if number == len(lines):  # no newline after it: the writer died mid-write, before answering
                    log.warning("%s: ignoring a torn last record (%d bytes)", self.path, len(line))
                    continue
                raise JournalError(f"{self.path}, line {number}: unreadable record ({error}); the local state "
                                   f"cannot be restored faithfully. Move {self.directory} away to start empty."
                                   ) from None

    def restore(self) -> RestoreReport:
        """Put the mirror into moto's backends (after `spotrun.provision` created the resources again)."""
        from moto.dynamodb.models import dynamodb_backends
        from moto.s3.models import s3_backends
        from moto.sqs.models import sqs_backends

        started = time.monotonic()
        dynamodb = dynamodb_backends[self.account][self.region]
        s3 = s3_backends[self.account]["aws"]
        sqs = sqs_backends[self.account][self.region]
        blob_bytes = 0
        for kind, table in self.mirror.items():
            for record in table.values():
                try:
                    if kind == "ddb":
                        dynamodb.put_item(record["table"], record["item"])
                    elif kind == "s3":
                        data = self._read_blob(record)
                        blob_bytes += len(data)
                        stored = s3.put_object(record["bucket"], record["key"], data, etag=record.get("etag"),
                                               disable_notification=True)
                        stored.set_metadata(dict(record.get("meta") or {}))
                    else:
                        sqs.get_queue(record["queue"]).add_message(_message(record))
                except JournalError:
                    raise
                except Exception as error:  # noqa: BLE001 - e.g. a table, bucket or queue this version no longer makes
                    where = {"ddb": "table", "s3": "bucket", "sqs": "queue"}[kind]
                    raise JournalError(f"cannot put back a {kind} record of {where} "
                                       f"{record.get('table') or record.get('bucket') or record.get('queue')} "
                                       f"({type(error).__name__}: {error}); move {self.directory} away to start "
                                       "empty") from None
        return RestoreReport(len(self.mirror["ddb"]), len(self.mirror["s3"]), len(self.mirror["sqs"]), blob_bytes,
                             self._loaded_bytes, time.monotonic() - started)

    def activate(self) -> None:
        """Compact (the journal becomes the current state; blobs nobody names are removed), then journal."""
        with self._lock:
            self._compact()
            named = {record["blob"] for record in self.mirror["s3"].values()}
            for path in self.blobs.iterdir():
                if path.name not in named:
                    path.unlink(missing_ok=True)
            self.active = True

    def close(self) -> None:
        with self._lock:
            self.active = False
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ------------------------------------------------------------------ writing

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Journal these images in order, then forget the blobs they superseded."""
        records = list(records)
        if not records:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        with self._lock:
            if self._fd is None:
                raise JournalError("the state journal is closed")
            try:
                _write_all(self._fd, data)
            except OSError as error:
                self.failed = error
                raise
            self._size += len(data)
            self.records_written += len(records)
            self.bytes_written += len(data)
            superseded = [old for record in records if (old := self._apply(record)) is not None]
            if self._size > max(self.compact_after_bytes, 2 * self._compacted_size):
                self._compact()
        for name in superseded:
            (self.blobs / name).unlink(missing_ok=True)

    def store_blob(self, data: bytes) -> dict[str, Any]:
        """Keep an object's body as a file of its own; the fields its record names it by."""
        name = uuid.uuid4().hex
        temporary = self.blobs / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.blobs / name)
        return {"blob": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def forget_blob(self, name: str) -> None:
        """A blob stored for a record that was never journaled."""
        (self.blobs / name).unlink(missing_ok=True)

    def known_messages(self) -> set[tuple[str, str]]:
        return set(self.mirror["sqs"])

    # ------------------------------------------------------------------ inside

    def _apply(self, record: dict[str, Any]) -> str | None:
        """Make `record` the newest image of its entity; the name of a blob it superseded."""
        kind, entity = _entity(record)
        table = self.mirror[kind]
        old = table.pop(entity, None)
        if _present(record):
            table[entity] = record
        if kind == "s3" and old is not None and old.get("blob") != record.get("blob"):
            return str(old["blob"])
        return None

    def _compact(self) -> None:
        """Rewrite the journal as one record per existing entity (the caller holds the lock)."""
        temporary = self.directory / f".{JOURNAL}.tmp"
        with temporary.open("wb") as handle:
            for table in self.mirror.values():
                for record in table.values():
                    handle.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        with contextlib.suppress(OSError):  # the rename itself, durable where the filesystem allows
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = self._compacted_size = self.path.stat().st_size
        self.compactions += 1

    def _read_blob(self, record: dict[str, Any]) -> bytes:
        path = self.blobs / str(record["blob"])
        where = f"s3://{record['bucket']}/{record['key']}"
        try:
            data = path.read_bytes()
        except OSError as error:
            raise JournalError(f"{where}: its body {path} cannot be read ({error.strerror}); the local state "
                               f"cannot be restored faithfully. Move {self.directory} away to start empty.") from None
        if len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise JournalError(f"{where}: its body {path} is not what was stored ({len(data)} bytes, expected "
                               f"{record['size']} with SHA-256 {record['sha256']}); the local state cannot be restored "
                               f"faithfully. Move {self.directory} away to start empty.")
        return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ---------------------------------------------------------------------- SQS messages as records

def message_record(queue: str, message: Any) -> dict[str, Any]:
    """A moto SQS message as a journal record (binary attribute values as base64)."""
    attributes = {}
    for name, value in (message.message_attributes or {}).items():
        value = dict(value)
        if isinstance(value.get("BinaryValue"), bytes):
            value["BinaryValue"] = {"base64": base64.b64encode(value["BinaryValue"]).decode()}
        attributes[name] = value
    return {"t": "sqs", "queue": queue, "id": message.id, "message": {
        "body": message.body, "attributes": attributes, "group_id": message.group_id,
        "deduplication_id": message.deduplication_id, "sequence_number": message.sequence_number,
        "sent_timestamp": message.sent_timestamp, "system_attributes": message.system_attributes or {}}}


def _message(record: dict[str, Any]) -> Any:
    from moto.sqs.models import Message

    fields = record["message"]
    message = Message(record["id"], fields["body"], dict(fields.get("system_attributes") or {}))
    attributes = {}
    for name, value in (fields.get("attributes") or {}).items():
        value = dict(value)
        if isinstance(value.get("BinaryValue"), dict):
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"]["base64"])
        attributes[name] = value
    message.message_attributes = attributes
    message.group_id = fields.get("group_id")
    message.deduplication_id = fields.get("deduplication_id")
    message.sequence_number = fields.get("sequence_number")
    message.mark_sent()
    if fields.get("sent_timestamp"):
        message.sent_timestamp = fields["sent_timestamp"]
    return message
