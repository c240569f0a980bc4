"""S3 transfers for checkpoints, inputs and outputs, with an injected boto3 S3 client.

Uploads go through one s3transfer manager, so files and their parts share one bounded pool of
threads (multipart from 8 MiB). Each file's SHA-256 is computed from the bytes the upload reads:
s3transfer reads a multipart upload's parts once, in order; a small file sent in one PUT may be read
again (checksum calculation, retries), and only the first pass over each byte is hashed. Should a
read pattern ever leave bytes unhashed, they are read once more at the end, so the digest is
always that of the file.

Downloads resume: bytes go to `<dest>.part`, and an existing `.part` is continued with a ranged GET
(pinned with If-Match to the object first seen, within one call). Transient errors (throttling, 5xx,
timeouts, connection resets) are retried with backoff from where the transfer stopped. The size and
SHA-256 are checked when known, and `dest` appears only once whole and verified. Resuming from an
existing `.part` reads that prefix once from the local disk to seed the digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

MIB = 1 << 20
MULTIPART_THRESHOLD = 8 * MIB
READ_CHUNK = 1 * MIB
UPLOAD_BATCH_FILES = 256  # files open at once while uploading
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
    """8 MiB parts, 16 MiB once files reach 1 GiB (fewer requests; s3transfer still raises it when
    a file would need more than 10,000 parts)."""
    return 16 * MIB if largest_bytes >= 1024 * MIB else 8 * MIB


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


class _DigestingReader:
    """A seekable file that hashes, once and in order, the bytes read through it."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("rb")
        self._digest = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) are in the digest
        self._lock = threading.Lock()

    def read(self, amount: int | None = -1) -> bytes:
        with self._lock:
            position = self._file.tell()
            data = self._file.read(-1 if amount is None else amount)
            end = position + len(data)
            if position <= self._hashed < end:
                self._digest.update(memoryview(data)[self._hashed - position:])
                self._hashed = end
            return data

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._lock:
            return self._file.seek(offset, whence)

    def tell(self) -> int:
        with self._lock:
            return self._file.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()

    def finish(self) -> tuple[int, str]:
        """(size, sha256) of the file; reads only what the upload did not."""
        size = self.path.stat().st_size
        if self._hashed < size:
            sha256_file(self.path, self._hashed, self._digest)
            self._hashed = size
        return size, self._digest.hexdigest()


def upload_files(s3: Any, bucket: str, prefix: str, files: list[Path], base: Path, threads: int = 8,
                 extra_args: Mapping[str, Any] | None = None) -> list[FileEntry]:
    """Upload `files` to `<prefix>/<path relative to base>` in parallel; their entries, in order."""
    base = base.resolve()
    names = []
    for path in files:
        try:
            names.append(PurePosixPath(Path(path).resolve().relative_to(base)).as_posix())
        except ValueError:
            raise ValueError(f"{path} is not under {base}") from None
    sizes = [Path(p).stat().st_size for p in files]
    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=chunk_size_for(max(sizes, default=0)),
        max_concurrency=max(1, threads), use_threads=True, preferred_transfer_client="classic",
    )
    entries: list[FileEntry] = []
    with create_transfer_manager(s3, config) as manager:
        for start in range(0, len(files), UPLOAD_BATCH_FILES):
            batch = list(zip(files[start:start + UPLOAD_BATCH_FILES], names[start:start + UPLOAD_BATCH_FILES],
                             sizes[start:start + UPLOAD_BATCH_FILES], strict=True))
            readers = [_DigestingReader(Path(path)) for path, _, _ in batch]
            try:
                futures = [manager.upload(reader, bucket, object_key(prefix, name), extra_args=dict(extra_args or {}))
                           for reader, (_, name, _) in zip(readers, batch, strict=True)]
                for future, reader, (path, name, size_before) in zip(futures, readers, batch, strict=True):
                    key = object_key(prefix, name)
                    try:
                        future.result()
                    except Exception as error:  # noqa: BLE001 - any failure fails the upload, naming the key
                        raise TransferError(f"upload of {path} to s3://{bucket}/{key} failed: {error}") from error
                    size, digest = reader.finish()
                    if size != size_before:
                        raise TransferError(f"{path} changed while it was uploaded to s3://{bucket}/{key}")
                    entries.append(FileEntry(name=name, size=size, sha256=digest))
            finally:
                for reader in readers:
                    reader.close()
    return entries


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
