"""S3 transfers against moto: checksums computed while uploading, resumed and verified downloads."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from urllib3.exceptions import ProtocolError

from spotrun_worker import transfer
from spotrun_worker.transfer import FileEntry, TransferError, download_file, download_prefix, upload_files
from tests.support import mocked_aws

BUCKET = "spotrun-test"
MIB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


class CuttingBody:
    """A response body that counts what is read and can drop the connection after some bytes."""

    def __init__(self, body: Any, spy: SpyS3, cut_after: int | None):
        self.body, self.spy, self.cut_after, self.delivered = body, spy, cut_after, 0

    def read(self, amount: int | None = None) -> bytes:
        if self.cut_after is not None:
            if self.delivered >= self.cut_after:
                raise ProtocolError("Connection broken: ConnectionResetError(104, 'Connection reset by peer')")
            amount = min(amount or self.cut_after, self.cut_after - self.delivered)
        data = self.body.read(amount)
        self.delivered += len(data)
        self.spy.bytes_read += len(data)
        return data


class SpyS3:
    """Wraps the moto client: records GetObject requests, counts body bytes, follows a plan per
    request (an exception to raise, a byte count after which the connection drops, or a callable
    to run first)."""

    def __init__(self, client: Any, plan: list[Any] | None = None):
        self.client, self.plan = client, list(plan or [])
        self.requests: list[dict[str, Any]] = []
        self.bytes_read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, Exception):
            raise step
        if callable(step):
            step()  # something happens to the object before this request
            step = None
        response = self.client.get_object(**request)
        response["Body"] = CuttingBody(response["Body"], self, step)
        return response


@pytest.fixture(scope="module")
def moto_s3():
    """One moto S3 for the module (starting moto per test costs about half a second each)."""
    with pytest.MonkeyPatch.context() as patch, mocked_aws(patch) as session:
        yield session.client("s3")


@pytest.fixture
def s3(moto_s3):
    """An empty bucket for each test."""
    moto_s3.create_bucket(Bucket=BUCKET)
    yield moto_s3
    for page in moto_s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            moto_s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    moto_s3.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def put(s3, key: str, data: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def test_uploaded_files_come_back_identical_with_their_checksums(s3, tmp_path):
    # Given a checkpoint directory with a multipart-sized file, a small one, an empty one, nested
    base = tmp_path / "outgoing"
    (base / "ckpt_files").mkdir(parents=True)
    contents = {
        "ckpt_a.dmtcp": os.urandom(9 * MIB + 123),
        "ckpt_files/gconv.cache": os.urandom(1000),
        "empty.txt": b"",
    }
    for name, data in contents.items():
        (base / name).write_bytes(data)

    # When they are uploaded
    entries = upload_files(s3, BUCKET, "checkpoints/j/0/00000001/files", [base / n for n in contents], base, threads=4)

    # Then the entries carry names relative to the base, sizes and the SHA-256 of each file
    assert entries == [FileEntry(name=n, size=len(d), sha256=sha256(d)) for n, d in contents.items()]
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert listed == {f"checkpoints/j/0/00000001/files/{n}": len(d) for n, d in contents.items()}

    # And a verified download of the manifest's entries restores them byte for byte
    target = tmp_path / "incoming"
    manifest_files = [e.__dict__ for e in entries]
    paths = download_prefix(s3, BUCKET, "checkpoints/j/0/00000001/files", target, expected=manifest_files)
    assert sorted(p.relative_to(target).as_posix() for p in paths) == sorted(contents)
    for name, data in contents.items():
        assert (target / name).read_bytes() == data
    assert not list(target.rglob("*.part"))


def test_an_interrupted_download_resumes_with_a_ranged_get_for_the_rest_only(s3, tmp_path):
    data = os.urandom(3 * MIB + 5)
    put(s3, "inputs/data.bin", data)
    dest = tmp_path / "inputs" / "data.bin"
    dest.parent.mkdir()
    kept = MIB + 7
    (tmp_path / "inputs" / "data.bin.part").write_bytes(data[:kept])
    spy = SpyS3(s3)

    download_file(spy, BUCKET, "inputs/data.bin", dest, expected_size=len(data), expected_sha256=sha256(data))

    assert [r.get("Range") for r in spy.requests] == [f"bytes={kept}-"]
    assert spy.bytes_read == len(data) - kept
    assert dest.read_bytes() == data
    assert not (tmp_path / "inputs" / "data.bin.part").exists()


def test_dropped_connections_and_throttling_are_retried_from_where_the_transfer_stopped(s3, tmp_path, sleeps):
    data = os.urandom(2 * MIB)
    put(s3, "k", data)
    spy = SpyS3(s3, plan=[client_error("SlowDown", 503), 300_000, None])

    download_file(spy, BUCKET, "k", tmp_path / "k", expected_sha256=sha256(data), sleep=sleeps.append)

    assert [r.get("Range") for r in spy.requests] == [None, None, "bytes=300000-"]
    assert spy.bytes_read == len(data)  # nothing fetched twice
    assert (tmp_path / "k").read_bytes() == data
    assert sleeps == [0.5, 0.5]
    assert spy.requests[2]["IfMatch"]  # the resumed range is pinned to the object first seen


def test_an_object_replaced_between_resumed_requests_is_fetched_again_whole(s3, tmp_path, sleeps):
    put(s3, "k", os.urandom(200_000))
    replacement = os.urandom(150_000)
    spy = SpyS3(s3, plan=[50_000, lambda: put(s3, "k", replacement)])

    download_file(spy, BUCKET, "k", tmp_path / "k", expected_sha256=sha256(replacement), sleep=sleeps.append)

    # The resumed range is pinned to the first object's ETag: S3 refuses it, and the download restarts.
    assert [r.get("Range") for r in spy.requests] == [None, "bytes=50000-", None]
    assert (tmp_path / "k").read_bytes() == replacement


def test_persistent_throttling_gives_up_with_the_key_in_the_error(s3, tmp_path, sleeps):
    put(s3, "k", b"x")
    spy = SpyS3(s3, plan=[client_error("SlowDown", 503)] * 10)
    with pytest.raises(TransferError, match=r"s3://spotrun-test/k: giving up after 3 retries"):
        download_file(spy, BUCKET, "k", tmp_path / "k", retries=3, sleep=sleeps.append)
    assert len(spy.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_errors_that_will_not_pass_are_not_retried(s3, tmp_path, sleeps):
    spy = SpyS3(s3, plan=[client_error("AccessDenied", 403)])
    with pytest.raises(TransferError, match="s3://spotrun-test/secret: access denied"):
        download_file(spy, BUCKET, "secret", tmp_path / "secret", sleep=sleeps.append)
    with pytest.raises(TransferError, match="s3://spotrun-test/nothing-here does not exist"):
        download_file(s3, BUCKET, "nothing-here", tmp_path / "nothing-here", sleep=sleeps.append)
    assert sleeps == []


def test_a_corrupted_object_fails_verification_and_leaves_nothing_behind(s3, tmp_path):
    original = os.urandom(4096)
    put(s3, "checkpoints/x/ckpt.dmtcp", bytes([original[0] ^ 0xFF]) + original[1:])  # same size, one byte off
    dest = tmp_path / "ckpt.dmtcp"
    with pytest.raises(TransferError, match=r"s3://spotrun-test/checkpoints/x/ckpt.dmtcp failed verification: sha256"):
        download_file(s3, BUCKET, "checkpoints/x/ckpt.dmtcp", dest, expected_size=4096, expected_sha256=sha256(original))
    assert not dest.exists()
    assert not dest.with_name("ckpt.dmtcp.part").exists()


def test_a_truncated_object_fails_on_its_size(s3, tmp_path):
    put(s3, "k", b"short")
    with pytest.raises(TransferError, match="size 5 bytes, expected 10"):
        download_file(s3, BUCKET, "k", tmp_path / "k", expected_size=10)


def test_a_kept_part_with_wrong_bytes_is_discarded_and_fetched_again(s3, tmp_path):
    data = os.urandom(100_000)
    put(s3, "k", data)
    (tmp_path / "k.part").write_bytes(b"\0" * 40_000)  # e.g. a crash left garbage behind
    spy = SpyS3(s3)

    download_file(spy, BUCKET, "k", tmp_path / "k", expected_size=len(data), expected_sha256=sha256(data))

    assert [r.get("Range") for r in spy.requests] == ["bytes=40000-", None]
    assert (tmp_path / "k").read_bytes() == data


def test_a_complete_part_is_not_fetched_again(s3, tmp_path):
    data = os.urandom(10_000)
    put(s3, "k", data)
    (tmp_path / "k.part").write_bytes(data)
    spy = SpyS3(s3)
    download_file(spy, BUCKET, "k", tmp_path / "k")  # size unknown: S3 answers 416 to the range
    assert (tmp_path / "k").read_bytes() == data
    assert spy.bytes_read == 0


def test_a_verified_file_already_in_place_is_kept(s3, tmp_path):
    data = b"already here"
    (tmp_path / "k").write_bytes(data)
    spy = SpyS3(s3)
    download_file(spy, BUCKET, "k", tmp_path / "k", expected_size=len(data), expected_sha256=sha256(data))
    assert spy.requests == []


def test_download_prefix_refuses_missing_files_and_keys_that_escape_the_target(s3, tmp_path):
    put(s3, "p/a", b"a")
    with pytest.raises(TransferError, match="s3://spotrun-test/p/b is missing"):
        download_prefix(s3, BUCKET, "p", tmp_path / "t", expected=[{"name": "a", "size": 1, "sha256": sha256(b"a")},
                                                                    {"name": "b", "size": 1, "sha256": sha256(b"b")}])
    put(s3, "p/../evil", b"e")
    with pytest.raises(TransferError, match="refusing to write outside"):
        download_prefix(s3, BUCKET, "p/", tmp_path / "t")


def test_download_prefix_without_a_manifest_takes_everything_under_the_prefix_only(s3, tmp_path):
    put(s3, "jobs/j/outputs/1/a.txt", b"1")
    put(s3, "jobs/j/outputs/1/sub/b.txt", b"22")
    put(s3, "jobs/j/outputs/10/c.txt", b"333")  # a sibling prefix, not a child
    paths = download_prefix(s3, BUCKET, "jobs/j/outputs/1", tmp_path / "t")
    assert sorted(p.relative_to(tmp_path / "t").as_posix() for p in paths) == ["a.txt", "sub/b.txt"]


def test_uploads_refuse_files_outside_their_base(s3, tmp_path):
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "base").mkdir()
    with pytest.raises(ValueError, match="not under"):
        upload_files(s3, BUCKET, "p", [tmp_path / "outside.txt"], tmp_path / "base")


def test_a_failed_upload_names_the_key(s3, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(TransferError, match=r"s3://no-such-bucket/p/f failed"):
        upload_files(s3, "no-such-bucket", "p", [tmp_path / "f"], tmp_path)


class UploadSpy:
    """Wraps the moto client: records upload requests (bodies as their type and length) and can
    run a callable before one of them or fail a part."""

    def __init__(self, client: Any, before: dict[str, Any] | None = None, fail_part: int | None = None):
        self.client, self.before, self.fail_part = client, dict(before or {}), fail_part
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sending = self.most_sending = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _call(self, name: str, **request: Any) -> Any:
        body = request.get("Body")
        self.calls.append((name, {k: v for k, v in request.items() if k != "Body"}
                           | ({"Body": (type(body).__name__, len(body))} if body is not None else {})))
        if name in self.before:
            self.before.pop(name)()
        if name == "upload_part" and request["PartNumber"] == self.fail_part:
            raise client_error("AccessDenied", 403)
        sends = name in ("upload_part", "put_object")
        with self.lock:
            self.sending += sends
            self.most_sending = max(self.most_sending, self.sending)
        try:
            return getattr(self.client, name)(**request)
        finally:
            with self.lock:
                self.sending -= sends

    def put_object(self, **request: Any) -> Any:
        return self._call("put_object", **request)

    def create_multipart_upload(self, **request: Any) -> Any:
        return self._call("create_multipart_upload", **request)

    def upload_part(self, **request: Any) -> Any:
        return self._call("upload_part", **request)

    def complete_multipart_upload(self, **request: Any) -> Any:
        return self._call("complete_multipart_upload", **request)

    def abort_multipart_upload(self, **request: Any) -> Any:
        return self._call("abort_multipart_upload", **request)

    def requests(self, name: str) -> list[dict[str, Any]]:
        return [request for called, request in self.calls if called == name]


@pytest.fixture
def s3_over_http():
    """moto's server over plain HTTP, as the local runtime and the agent bench use it (moto's
    in-process mock cannot take a bytearray body over HTTP)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    yield client
    # The server shares moto's in-process state with the mock the other tests use.
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)
    server.stop()


@pytest.mark.slow
def test_each_part_is_read_once_hashed_in_order_and_sent_from_that_buffer(s3_over_http, tmp_path, monkeypatch):
    # Given two multipart-sized files and 5 MiB parts (S3's smallest)
    monkeypatch.setattr(transfer, "chunk_size_for", lambda largest: 5 * MIB)
    contents = {"a.bin": os.urandom(12 * MIB + 7), "b.bin": os.urandom(10 * MIB)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    s3 = s3_over_http
    spy = UploadSpy(s3)
    sent: list[tuple[str, bool]] = []

    def record(request: Any, operation_name: str, **_: Any) -> None:
        if operation_name == "UploadPart":
            sent.append((type(request.body).__name__, "Expect" in request.headers))

    # When they are uploaded by two threads
    s3.meta.events.register("before-sign.s3.UploadPart", record)
    entries = upload_files(spy, BUCKET, "c", [tmp_path / n for n in contents], tmp_path, threads=2)

    # Then each part went out once, as the very buffer hashed (a bytearray: botocore neither wraps nor
    # copies it), declaring CRC32 like upload_file
    assert entries == [FileEntry(name=n, size=len(d), sha256=sha256(d)) for n, d in contents.items()]
    parts = sorted((r["Key"], r["PartNumber"], r["Body"], r["ChecksumAlgorithm"]) for r in spy.requests("upload_part"))
    assert parts == [("c/a.bin", 1, ("bytearray", 5 * MIB), "CRC32"), ("c/a.bin", 2, ("bytearray", 5 * MIB), "CRC32"),
                     ("c/a.bin", 3, ("bytearray", 2 * MIB + 7), "CRC32"),
                     ("c/b.bin", 1, ("bytearray", 5 * MIB), "CRC32"), ("c/b.bin", 2, ("bytearray", 5 * MIB), "CRC32")]
    assert {r["ChecksumAlgorithm"] for r in spy.requests("create_multipart_upload")} == {"CRC32"}
    assert spy.most_sending <= 2
    assert sent == [("bytearray", False)] * 5  # the buffer itself, without waiting for a 100 Continue
    for completed in spy.requests("complete_multipart_upload"):
        assert all(part["ChecksumCRC32"] for part in completed["MultipartUpload"]["Parts"])
    for name, data in contents.items():
        assert s3.get_object(Bucket=BUCKET, Key=f"c/{name}")["Body"].read() == data


def test_a_file_that_changes_while_it_is_read_fails_and_its_upload_is_aborted(s3, tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(os.urandom(9 * MIB))
    spy = UploadSpy(s3, before={"create_multipart_upload": lambda: path.write_bytes(b"rewritten in place")})

    with pytest.raises(TransferError, match=r"state.bin changed while it was uploaded to s3://spotrun-test/p/state.bin"):
        upload_files(spy, BUCKET, "p", [path], tmp_path)

    assert len(spy.requests("abort_multipart_upload")) == 1
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_a_failed_part_aborts_the_upload_and_the_error_names_the_key(s3, tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(20 * MIB))
    (tmp_path / "small.txt").write_text("x")
    spy = UploadSpy(s3, fail_part=2)

    with pytest.raises(TransferError, match=r"upload of .*big.bin to s3://spotrun-test/p/big.bin failed: .*AccessDenied"):
        upload_files(spy, BUCKET, "p", [tmp_path / "big.bin", tmp_path / "small.txt"], tmp_path, threads=2)

    assert spy.requests("complete_multipart_upload") == []
    assert len(spy.requests("abort_multipart_upload")) == 1
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_parts_grow_so_that_no_file_needs_more_than_10000():
    assert transfer.part_size_for(100 * MIB, 8 * MIB) == 8 * MIB
    assert transfer.part_size_for(10_000 * 8 * MIB, 8 * MIB) == 8 * MIB
    assert transfer.part_size_for(10_000 * 8 * MIB + 1, 8 * MIB) == 9 * MIB


def test_part_size_grows_for_large_files():
    assert transfer.chunk_size_for(100 * MIB) == 8 * MIB
    assert transfer.chunk_size_for(4096 * MIB) == 16 * MIB
