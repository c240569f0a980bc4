"""S3 transfers for checkpoints, inputs and outputs, with an injected boto3 S3 client.

Uploads read each file once, in order: every part (8 MiB, multipart from 8 MiB) is read into
memory, added to the file's SHA-256 and sent from that same buffer by a bounded pool of threads
that all files share, so the digest is exactly that of the bytes uploaded. A file whose size
changes while it is read fails the upload, and a multipart upload that fails is aborted. Parts
declare the same checksum algorithm as boto3's `upload_file` (CRC32 by default) for S3 to verify.
Bodies are bytearrays, which botocore keeps as they are (bytes it wraps in BytesIO, and s3transfer
sends file objects): its CRC32, its SigV4 payload hash (plain HTTP) and the socket take the buffer
whole, without copies under the GIL or an `Expect: 100-continue` round trip per part. (moto's
in-process mock, unlike its server, rejects such a body over plain HTTP or without checksums.)

Downloads resume: bytes go to `<dest>.part`, and an existing `.part` is continued with a ranged GET
(pinned with If-Match to the object first seen, within one call). Transient errors (throttling, 5xx,
timeouts, connection resets) are retried with backoff from where the transfer stopped. The size and
SHA-256 are checked when known, and `dest` appears only once whole and verified. Resuming from an
existing `.part` reads that prefix once from the local disk to seed the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

MIB = 1 << 20
MULTIPART_THRESHOLD = 8 * MIB
READ_CHUNK = 1 * MIB
MAX_PARTS = 10_000  # S3's limit per multipart upload
READ_AHEAD_PARTS = 2  # parts held in memory beyond those being sent
# Of the upload's extra arguments, those UploadPart and CompleteMultipartUpload take too.
PART_ARGS = frozenset({"SSECustomerKey", "SSECustomerAlgorithm", "SSECustomerKeyMD5", "RequestPayer",
                       "ExpectedBucketOwner"})
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferError(RuntimeError):
    """A transfer failed for good; the message names the S3 key."""


@dataclass
class FileEntry:
    """One uploaded file: its name relative to the upload's base directory (POSIX separators)."""

    name: str
    size: int
    sha256: str


def chunk_size_for(largest_bytes: int) -> int:
    """8 MiB parts, 16 MiB once files reach 1 GiB (fewer requests); see part_size_for."""
    return 16 * MIB if largest_bytes >= 1024 * MIB else 8 * MIB


def part_size_for(size: int, chunk: int) -> int:
    """`chunk`, raised to whole MiB where a file would otherwise need more than MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)
    return max(chunk, -(-needed // MIB) * MIB)


def sha256_file(path: Path, start: int = 0, digest: Any = None) -> Any:
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(start)
        while block := handle.read(READ_CHUNK):
            digest.update(block)
    return digest


def object_key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


# ------------------------------------------------------------------ uploads


class _Cancelled(Exception):
    """A request not sent because another file of the same upload had failed."""


@dataclass
class _Pending:
    path: Path
    key: str
    size: int
    sha256: str = ""
    upload_id: str | None = None
    sent: list[Future[Any]] = field(default_factory=list)  # the PutObject, or the parts and then the completion
    error: BaseException | None = None  # raised while reading (and submitting)


class _Uploader:
    """Reads and hashes files in the calling thread; a pool of `threads` sends their parts."""

    def __init__(self, s3: Any, bucket: str, threads: int, extra_args: Mapping[str, Any] | None, chunk: int):
        self.s3, self.bucket, self.chunk = s3, bucket, chunk
        self.args = dict(extra_args or {})
        config = getattr(getattr(s3, "meta", None), "config", None)
        if (getattr(config, "request_checksum_calculation", None) == "when_supported"
                and not any(k.startswith("Checksum") for k in self.args)):
            self.args["ChecksumAlgorithm"] = "CRC32"  # as s3transfer declares for upload_file
        self.part_args = {k: v for k, v in self.args.items() if k in PART_ARGS or k == "ChecksumAlgorithm"}
        self.complete_args = {k: v for k, v in self.args.items() if k in PART_ARGS}
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="spotrun-upload")
        # Bounds the memory: each permit is one part read and not yet sent.
        self.buffers = threading.BoundedSemaphore(self.threads + READ_AHEAD_PARTS)
        self.failed = threading.Event()
        # Buffers of sent parts, reused: a new one is zeroed (and faulted in) while holding the GIL.
        self._spare: list[bytearray] = []
        self._spare_lock = threading.Lock()

    def submit(self, pending: _Pending) -> None:
        digest = hashlib.sha256()
        with pending.path.open("rb") as handle:
            if pending.size < MULTIPART_THRESHOLD:
                data = self._read(handle, pending, pending.size)
                digest.update(data)
                self._expect_end(handle, pending)
                pending.sent.append(self._send(self._put, pending.key, data))
            else:
                part_size = part_size_for(pending.size, self.chunk)
                pending.upload_id = self.s3.create_multipart_upload(
                    Bucket=self.bucket, Key=pending.key, **self.args)["UploadId"]
                for number, offset in enumerate(range(0, pending.size, part_size), start=1):
                    data = self._read(handle, pending, min(part_size, pending.size - offset))
                    digest.update(data)  # in order, from the very buffer that is sent
                    pending.sent.append(self._send(self._part, pending.key, pending.upload_id, number, data))
                self._expect_end(handle, pending)
                # Queued after its parts, so every part has left the queue once this runs.
                completion = self.pool.submit(self._complete, pending.key, pending.upload_id, list(pending.sent))
                completion.add_done_callback(self._note_failure)
                pending.sent.append(completion)
        pending.sha256 = digest.hexdigest()

    def _read(self, handle: Any, pending: _Pending, amount: int) -> bytearray:
        self.buffers.acquire()
        try:
            if self.failed.is_set():
                raise _Cancelled()
            data = self._buffer(amount)
            if handle.readinto(data) != amount:
                raise self._changed(pending)
            return data
        except BaseException:
            self.buffers.release()
            raise

    def _buffer(self, amount: int) -> bytearray:
        with self._spare_lock:
            if amount == self.chunk and self._spare:
                return self._spare.pop()
        return bytearray(amount)

    def _expect_end(self, handle: Any, pending: _Pending) -> None:
        if handle.read(1):
            raise self._changed(pending)

    def _changed(self, pending: _Pending) -> TransferError:
        return TransferError(f"{pending.path} changed while it was uploaded to s3://{self.bucket}/{pending.key}")

    def _send(self, call: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `call` in the pool; its last argument, the buffer (and its permit, taken by _read),
        is given back when it ends: botocore is done with a body once the call returns."""
        def run() -> Any:
            try:
                if self.failed.is_set():
                    raise _Cancelled()
                return call(*args)
            finally:
                buffer = args[-1]
                if len(buffer) == self.chunk:
                    with self._spare_lock:
                        self._spare.append(buffer)
                self.buffers.release()
        future = self.pool.submit(run)
        future.add_done_callback(self._note_failure)
        return future

    def _note_failure(self, future: Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed.set()

    def _put(self, key: str, data: bytearray) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, **self.args)

    def _part(self, key: str, upload_id: str, number: int, data: bytearray) -> dict[str, Any]:
        response = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                       Body=data, **self.part_args)
        part = {"ETag": response["ETag"], "PartNumber": number}
        algorithm = self.part_args.get("ChecksumAlgorithm")
        member = f"Checksum{str(algorithm).upper()}"
        if algorithm and member in response:
            part[member] = response[member]
        return part

    def _complete(self, key: str, upload_id: str, parts: list[Future[Any]]) -> None:
        done = [future.result() for future in parts]
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                          MultipartUpload={"Parts": done}, **self.complete_args)

    def finish(self, pending: list[_Pending]) -> None:
        """Wait for everything sent; abort failed multipart uploads; raise the first failure."""
        self.pool.shutdown(wait=True)
        failures = []
        for item in pending:
            errors = [item.error] + [CancelledError() if f.cancelled() else f.exception() for f in item.sent]
            found = [e for e in errors if e is not None]
            if not found:
                continue
            real = [e for e in found if not isinstance(e, (_Cancelled, CancelledError))]
            failures.append((not real, item, (real or found)[0]))
            if item.upload_id is not None:
                # Best effort: the bucket's lifecycle rule removes what is left after a day.
                with contextlib.suppress(Exception):
                    self.s3.abort_multipart_upload(Bucket=self.bucket, Key=item.key, UploadId=item.upload_id)
        if failures:
            # The first file that failed by itself, rather than one stopped because of another.
            _, item, error = min(failures, key=lambda failure: failure[0])
            if isinstance(error, TransferError):
                raise error
            raise TransferError(f"upload of {item.path} to s3://{self.bucket}/{item.key} failed: {error}") from error


def upload_files(s3: Any, bucket: str, prefix: str, files: list[Path], base: Path, threads: int = 8,
                 extra_args: Mapping[str, Any] | None = None) -> list[FileEntry]:
    """Upload `files` to `<prefix>/<path relative to base>` in parallel; their entries, in order.

    `extra_args` are PutObject / CreateMultipartUpload parameters (ContentType, Metadata, ...).
    """
    base = base.resolve()
    names = []
    for path in files:
        try:
            names.append(PurePosixPath(Path(path).resolve().relative_to(base)).as_posix())
        except ValueError:
            raise ValueError(f"{path} is not under {base}") from None
    pending = [_Pending(path=Path(path), key=object_key(prefix, name), size=Path(path).stat().st_size)
               for path, name in zip(files, names, strict=True)]
    chunk = chunk_size_for(max((p.size for p in pending), default=0))
    uploader = _Uploader(s3, bucket, threads, extra_args, chunk)
    try:
        for item in pending:
            if uploader.failed.is_set():
                break
            try:
                uploader.submit(item)
            except Exception as error:  # noqa: BLE001 - reported by finish(), naming the key
                item.error = error
                uploader.failed.set()
    finally:
        uploader.finish(pending)
    return [FileEntry(name=name, size=item.size, sha256=item.sha256) for name, item in zip(names, pending, strict=True)]


# ---------------------------------------------------------------- downloads


def is_transient(error: BaseException) -> bool:
    """Worth retrying: throttling, server errors, timeouts, dropped or reset connections."""
    if isinstance(error, ClientError):
        status = _status(error)
        return _error_code(error) in TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(error, (BotoConnectionError, ResponseStreamingError, IncompleteReadError, Urllib3Error,
                              ConnectionError, TimeoutError))


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class _PartialFile:
    """The `.part` file of a download: how many bytes it holds and the digest of those bytes."""

    def __init__(self, path: Path, keep: bool):
        self.path = path
        if not keep:
            path.unlink(missing_ok=True)
        path.touch()  # exists even for an empty object
        self.offset = path.stat().st_size
        self.resumed = self.offset > 0
        # Seeding the digest reads the kept prefix once from the local disk.
        self.digest = sha256_file(path) if self.resumed else hashlib.sha256()

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.offset = 0
        self.resumed = False
        self.digest = hashlib.sha256()


def download_file(s3: Any, bucket: str, key: str, dest: Path, expected_size: int | None = None,
                  expected_sha256: str | None = None, retries: int = 5, backoff_seconds: float = 0.5,
                  sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download s3://bucket/key to `dest`, resuming `<dest>.part` if one is there; `dest`.

    Raises TransferError naming the key when the object is missing, a transfer keeps failing
    (more than `retries` transient errors in a row without progress) or the size or SHA-256 does
    not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    where = f"s3://{bucket}/{key}"

    if dest.exists() and expected_size is not None and expected_sha256 is not None \
            and dest.stat().st_size == expected_size and sha256_file(dest).hexdigest() == expected_sha256:
        return dest  # already here and verified (staged by an earlier run on this machine)

    for keep in (True, False):
        part = _PartialFile(dest.with_name(dest.name + ".part"), keep)
        if expected_size is not None and part.offset > expected_size:
            part.restart()
        _fetch(s3, bucket, key, part, expected_size, retries, backoff_seconds, sleep)
        problem = None
        if expected_size is not None and part.offset != expected_size:
            problem = f"size {part.offset} bytes, expected {expected_size}"
        elif expected_sha256 is not None and part.digest.hexdigest() != expected_sha256:
            problem = f"sha256 {part.digest.hexdigest()}, expected {expected_sha256}"
        if problem is None:
            os.replace(part.path, dest)
            return dest
        if not part.resumed:
            part.path.unlink(missing_ok=True)
            raise TransferError(f"{where} failed verification: {problem}")
        # The bytes kept from an earlier run may be what is wrong: start over once.
    raise AssertionError("unreachable")


def _fetch(s3: Any, bucket: str, key: str, part: _PartialFile, expected_size: int | None,
           retries: int, backoff_seconds: float, sleep: Callable[[float], None]) -> None:
    """Append the object's bytes from `part.offset` on to the partial file."""
    where = f"s3://{bucket}/{key}"
    etag: str | None = None
    failures = 0
    while True:
        if expected_size is not None and part.offset == expected_size:
            return
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if part.offset:
            request["Range"] = f"bytes={part.offset}-"
        if etag:
            request["IfMatch"] = etag
        received = 0
        try:
            try:
                response = s3.get_object(**request)
            except ClientError as error:
                code, status = _error_code(error), _status(error)
                if code == "InvalidRange" or status == 416:
                    total = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
                    if part.offset == total:
                        return  # the .part already holds the whole object
                    part.restart()  # longer than the object: it was another object's bytes
                    continue
                if code == "PreconditionFailed" or status == 412:
                    part.restart()  # the object changed since this call's first request
                    etag = None
                    continue
                if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                    raise TransferError(f"{where} does not exist") from error
                if code in ("AccessDenied", "403") or status == 403:
                    raise TransferError(f"{where}: access denied") from error
                raise
            etag = etag or response.get("ETag")
            start, total = _response_span(response)
            if start != part.offset:
                part.restart()  # the server ignored the range and sent the whole object
            body = response["Body"]
            with part.path.open("ab") as out:
                while block := body.read(READ_CHUNK):
                    out.write(block)
                    part.digest.update(block)
                    part.offset += len(block)
                    received += len(block)
                out.flush()
                os.fsync(out.fileno())
            if total is not None and part.offset < total:
                raise IncompleteReadError(actual_bytes=part.offset, expected_bytes=total)
            return
        except TransferError:
            raise
        except (ClientError, BotoCoreError, Urllib3Error, ConnectionError, TimeoutError) as error:
            if not is_transient(error):
                raise TransferError(f"{where}: {error}") from error
            failures = 0 if received else failures + 1
            if failures > retries:
                raise TransferError(f"{where}: giving up after {retries} retries: {error}") from error
            sleep(backoff_seconds * 2 ** max(0, failures - 1))


def _response_span(response: Mapping[str, Any]) -> tuple[int, int | None]:
    """(first byte, total object size) of a GET answer."""
    content_range = response.get("ContentRange")
    if content_range:
        match = _CONTENT_RANGE.match(content_range)
        if match:
            total = None if match.group(3) == "*" else int(match.group(3))
            return int(match.group(1)), total
    length = response.get("ContentLength")
    return 0, int(length) if length is not None else None


def _listing(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            sizes[item["Key"]] = int(item["Size"])
    return sizes


def _safe_relative(name: str, where: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise TransferError(f"{where}: refusing to write outside the target directory ({name!r})")
    return relative


def download_prefix(s3: Any, bucket: str, prefix: str, dest_dir: Path, threads: int = 8,
                    expected: Iterable[FileEntry | Mapping[str, Any]] | None = None) -> list[Path]:
    """Download every object under `prefix/` into `dest_dir` (keys relative to the prefix), in parallel.

    With `expected` (FileEntry objects or manifest dicts with name, size, sha256), exactly those
    files are fetched and verified, and a missing one is a TransferError.
    """
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    listed = _listing(s3, bucket, prefix)
    jobs: list[tuple[str, Path, int | None, str | None]] = []
    if expected is None:
        for key, size in sorted(listed.items()):
            name = key[len(prefix):]
            if not name or name.endswith("/"):
                continue  # "directory" placeholder objects
            jobs.append((key, dest_dir / _safe_relative(name, f"s3://{bucket}/{key}"), size, None))
    else:
        for entry in expected:
            item = entry if isinstance(entry, Mapping) else entry.__dict__
            key = prefix + item["name"]
            if key not in listed:
                raise TransferError(f"s3://{bucket}/{key} is missing")
            jobs.append((key, dest_dir / _safe_relative(item["name"], f"s3://{bucket}/{key}"),
                         item.get("size"), item.get("sha256")))
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
        futures = [pool.submit(download_file, s3, bucket, key, path, size, sha) for key, path, size, sha in jobs]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        raise failed[0]
    return [path for _, path, _, _ in jobs]
