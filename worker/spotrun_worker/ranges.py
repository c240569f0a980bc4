"""Checkpoint restores by parallel ranged GETs, each part verified against the manifest's CRC32.

`download_parts`: a HEAD pins the object's ETag and checks its size, then a pool of
threads fetches the parts with ranged GETs (If-Match the ETag), verifies each against its CRC32 and
writes it in place into `<dest>.part`. Verified parts are journaled in `<dest>.parts`, so an
interrupted restore fetches only what is missing (journaled parts are checked again from the local
disk first, which is why nothing is fsynced: a part the page cache lost fails its check and is fetched again). `dest` appears only when every part is in and verified.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from spotrun_worker import transfer
from spotrun_worker.parts import crc32_of, crc32_text
from spotrun_worker.transfer import TransferError

DOWNLOAD_THREADS = 8


@dataclass(frozen=True)
class _Span:
    number: int  # from 0
    offset: int
    size: int
    crc32: str


def _spans(parts: Sequence[Mapping[str, Any]]) -> list[_Span]:
    spans, offset = [], 0
    for number, part in enumerate(parts):
        spans.append(_Span(number, offset, int(part["size"]), str(part["crc32"])))
        offset += int(part["size"])
    return spans


class _Journal:
    """`<dest>.parts`: the object's ETag on the first line, then one verified part number a line."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> tuple[str | None, set[int]]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return None, set()
        if not lines:
            return None, set()
        return json.loads(lines[0]).get("etag"), {int(line) for line in lines[1:] if line.strip().isdigit()}

    def start(self, etag: str) -> None:
        self.path.write_text(json.dumps({"etag": etag}) + "\n")

    def add(self, number: int) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(f"{number}\n")


def download_parts(s3: Any, bucket: str, key: str, dest: Path, size: int, parts: Sequence[Mapping[str, Any]],
                   threads: int = DOWNLOAD_THREADS, retries: int = 5, backoff_seconds: float = 0.5,
                   sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download s3://bucket/key (`size` bytes, made of `parts`) to `dest` with parallel ranged GETs.

    Each part is verified against its CRC32; a restart continues from the journaled parts.
    TransferError names the key when the object is missing, changed, or a part keeps failing.
    """
    where = f"s3://{bucket}/{key}"
    spans = _spans(parts)
    if sum(span.size for span in spans) != size:
        raise TransferError(f"{where}: the manifest's parts add up to {sum(s.size for s in spans)} bytes, not {size}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial, journal = dest.with_name(dest.name + ".part"), _Journal(dest.with_name(dest.name + ".parts"))
    etag = _head(s3, bucket, key, size, where)
    kept_etag, done = journal.read()
    if kept_etag != etag or not partial.exists() or partial.stat().st_size != size:
        partial.unlink(missing_ok=True)
        done = set()
        journal.start(etag)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
        # Parts journaled by an earlier run are hashed again from the local disk.
        done = {n for n in done if n < len(spans) and _local_ok(fd, spans[n])}
        todo = [span for span in spans if span.number not in done]
        failures: list[BaseException] = []
        stop = threading.Event()

        def fetch(span: _Span) -> None:
            if stop.is_set():
                return
            try:
                _fetch_span(s3, bucket, key, etag, fd, span, where, retries, backoff_seconds, sleep)
                journal.add(span.number)
            except BaseException as error:
                failures.append(error)
                stop.set()
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo) or 1)),
                                thread_name_prefix="spotrun-range") as pool:
            list(pool.map(fetch, todo))
        if failures:
            error = failures[0]
            raise error if isinstance(error, TransferError) else TransferError(f"{where}: {error}") from error
        # No fsync: the image is read back at once by the restart, and a resumed download re-verifies every
        # journaled part's CRC32 from the disk, so a part lost with the page cache is fetched again.
        # (Flushing a multi-GB image cost seconds per restore and bought nothing.)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    journal.path.unlink(missing_ok=True)
    return dest


def _head(s3: Any, bucket: str, key: str, size: int, where: str) -> str:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        status = transfer._status(error)
        if status == 404 or transfer._error_code(error) in ("NoSuchKey", "404", "NotFound"):
            raise TransferError(f"{where} does not exist") from error
        raise TransferError(f"{where}: {error}") from error
    if int(head["ContentLength"]) != size:
        raise TransferError(f"{where} failed verification: size {head['ContentLength']} bytes, expected {size}")
    return str(head["ETag"])


def _local_ok(fd: int, span: _Span) -> bool:
    running, offset, left = 0, span.offset, span.size
    while left:
        block = os.pread(fd, min(left, transfer.READ_CHUNK), offset)
        if not block:
            return False
        running = crc32_of(block, running)
        offset, left = offset + len(block), left - len(block)
    return crc32_text(running) == span.crc32


def _fetch_span(s3: Any, bucket: str, key: str, etag: str, fd: int, span: _Span, where: str, retries: int,
                backoff_seconds: float, sleep: Callable[[float], None]) -> None:
    """Fetch one part, verify it, write it in place; transient errors and bad bytes are retried."""
    failures = 0
    while True:
        try:
            running, written = 0, 0
            if span.size:
                response = s3.get_object(Bucket=bucket, Key=key, IfMatch=etag,
                                         Range=f"bytes={span.offset}-{span.offset + span.size - 1}")
                start, _ = transfer._response_span(response)
                if start != span.offset:
                    raise _BadPart(f"part {span.number + 1}: the server answered from byte {start}, not its range")
                # Written in place as the bytes arrive (no part-sized buffer), checked once all are in.
                for block in response["Body"].iter_chunks(transfer.READ_CHUNK):
                    if written + len(block) > span.size:
                        break
                    running = crc32_of(block, running)
                    _write_at(fd, block, span.offset + written)
                    written += len(block)
            got = crc32_text(running)
            if written != span.size or got != span.crc32:
                raise _BadPart(f"part {span.number + 1} ({written} bytes, crc32 {got}) is not "
                               f"the manifest's ({span.size} bytes, crc32 {span.crc32})")
            return
        except ClientError as error:
            if transfer._error_code(error) == "PreconditionFailed" or transfer._status(error) == 412:
                raise TransferError(f"{where} changed while it was downloaded") from error
            if not transfer.is_transient(error):
                raise TransferError(f"{where}: {error}") from error
            last: BaseException = error
        except _BadPart as error:
            last = error
        except (BotoCoreError, Urllib3Error, ConnectionError, TimeoutError) as error:
            if not transfer.is_transient(error):
                raise TransferError(f"{where}: {error}") from error
            last = error
        failures += 1
        if failures > retries:
            if isinstance(last, _BadPart):
                raise TransferError(f"{where} failed verification: {last}")
            raise TransferError(f"{where}: giving up after {retries} retries: {last}") from last
        sleep(backoff_seconds * 2 ** (failures - 1))


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _BadPart(Exception):
    """A part's bytes did not match its digest."""
