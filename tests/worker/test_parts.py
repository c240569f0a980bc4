"""Checkpoint transfers by parts against moto: uploads that follow a file while it is written, and
restores by parallel ranged GETs, verified per part and resumable."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from spotrun_worker import parts
from spotrun_worker.parts import CheckpointUpload
from spotrun_worker.ranges import download_parts
from spotrun_worker.transfer import TransferError
from tests.worker.test_transfer import BUCKET, MIB, moto_s3, s3  # noqa: F401 - shared fixtures

PART = 5 * MIB  # S3's smallest part


def crc32(data: bytes) -> str:
    """A CRC32 as S3 writes it: base64 of its 4 big-endian bytes (computed here without the module's helper)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class Recording:
    """Wraps the client: when each request was made, by operation."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: list[tuple[str, float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if name not in ("upload_part", "get_object", "put_object", "create_multipart_upload",
                        "complete_multipart_upload", "abort_multipart_upload"):
            return target

        def call(**request: Any) -> Any:
            with self.lock:
                self.calls.append((name, time.monotonic(), request))
            return target(**request)
        return call

    def times(self, name: str) -> list[float]:
        return [at for called, at, _ in self.calls if called == name]

    def requests(self, name: str) -> list[dict[str, Any]]:
        return [request for called, _, request in self.calls if called == name]


def write_slowly(path: Path, data: bytes, block: int = MIB, pause: float = 0.01) -> None:
    with path.open("ab") as out:
        for start in range(0, len(data), block):
            out.write(data[start:start + block])
            out.flush()
            time.sleep(pause)


def no_open_uploads(client: Any) -> bool:
    return not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_a_file_is_uploaded_while_it_is_written_and_comes_back_identical(s3, tmp_path):  # noqa: F811
    # Given a checkpointer that writes a 23 MiB image into a .temp file, then renames it (as DMTCP does)
    spy = Recording(s3)
    data = os.urandom(23 * MIB)
    into = tmp_path / "into"
    into.mkdir()
    temp = tmp_path / "ckpt_a.dmtcp.temp"
    temp.touch()
    upload = CheckpointUpload(spy, BUCKET, "ck/1/files", part_size=PART)
    # When the upload follows the file from the moment it appears
    upload.follow(temp, "ckpt_a.dmtcp")
    write_slowly(temp, data)
    written_at = time.monotonic()
    os.rename(temp, into / "ckpt_a.dmtcp")
    (into / "ckpt_a_files").mkdir()
    (into / "ckpt_a_files" / "open.txt").write_bytes(b"kept open")
    entries = upload.finish([into / "ckpt_a.dmtcp", into / "ckpt_a_files" / "open.txt"], into)
    # Then its parts left while it was still being written, and every byte arrived
    assert sum(1 for at in spy.times("upload_part") if at < written_at) >= 3
    image, extra = entries
    assert (image.name, image.size, image.streamed) == ("ckpt_a.dmtcp", len(data), True)
    assert [p.size for p in image.parts] == [PART] * 4 + [3 * MIB]
    assert [p.crc32 for p in image.parts] == [crc32(data[i:i + PART]) for i in range(0, len(data), PART)]
    assert s3.get_object(Bucket=BUCKET, Key="ck/1/files/ckpt_a.dmtcp")["Body"].read() == data
    assert extra.to_manifest() == {"name": "ckpt_a_files/open.txt", "size": 9,
                                   "parts": [{"size": 9, "crc32": crc32(b"kept open")}]}
    assert not extra.streamed
    assert no_open_uploads(s3)


def test_a_followed_file_that_is_not_the_final_one_is_aborted_and_the_final_file_sent_whole(s3, tmp_path):  # noqa: F811
    # Given a followed temp file that the checkpointer then replaced by another file of the final name
    into = tmp_path / "into"
    into.mkdir()
    temp = tmp_path / "img.temp"
    temp.write_bytes(os.urandom(7 * MIB))
    upload = CheckpointUpload(s3, BUCKET, "ck/2/files", part_size=PART)
    upload.follow(temp, "img")
    final = os.urandom(6 * MIB)
    (into / "img").write_bytes(final)  # another inode
    # When the upload finishes with the final files
    entries = upload.finish([into / "img"], into)
    # Then the final bytes are what was stored, and the followed multipart upload is gone
    assert entries[0].streamed is False and entries[0].size == len(final)
    assert s3.get_object(Bucket=BUCKET, Key="ck/2/files/img")["Body"].read() == final
    assert no_open_uploads(s3)


def test_a_failed_capture_leaves_no_parts_behind(s3, tmp_path):  # noqa: F811
    # Given a capture that fails halfway through writing its image
    temp = tmp_path / "img.temp"
    temp.write_bytes(os.urandom(11 * MIB))
    upload = CheckpointUpload(s3, BUCKET, "ck/3/files", part_size=PART)
    upload.follow(temp, "img")
    time.sleep(0.3)  # some parts left
    # When the upload is aborted
    upload.abort()
    # Then nothing of it stays in the bucket, complete or not
    assert no_open_uploads(s3)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="ck/3/")


def test_a_file_of_unknown_size_gets_parts_that_double_every_thousand():
    assert parts.follow_part_size(1) == 16 * MIB
    assert parts.follow_part_size(1000) == 16 * MIB
    assert parts.follow_part_size(1001) == 32 * MIB
    assert parts.follow_part_size(10_000) == (16 * MIB) << 9
    # 10,000 parts hold far more than any instance's memory
    assert sum(parts.follow_part_size(n) for n in range(1, 10_001)) > 15 * (1 << 40)


def uploaded(client: Any, key: str, data: bytes) -> list[dict[str, Any]]:
    """Put `data` and return its manifest parts (PART-sized)."""
    client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return [{"size": len(data[i:i + PART]), "crc32": crc32(data[i:i + PART])} for i in range(0, len(data), PART)]


def test_a_download_fetches_every_part_by_range_in_parallel_and_verifies_it(s3, tmp_path):  # noqa: F811
    data = os.urandom(17 * MIB)
    manifest_parts = uploaded(s3, "obj", data)
    spy = Recording(s3)
    dest = download_parts(spy, BUCKET, "obj", tmp_path / "out" / "obj", len(data), manifest_parts, threads=4)
    assert dest.read_bytes() == data
    ranges = sorted(request["Range"] for request in spy.requests("get_object"))
    assert ranges == sorted(f"bytes={i}-{min(i + PART, len(data)) - 1}" for i in range(0, len(data), PART))
    assert all(request.get("IfMatch") for request in spy.requests("get_object"))
    assert not (tmp_path / "out" / "obj.part").exists() and not (tmp_path / "out" / "obj.parts").exists()


def test_a_part_that_does_not_match_its_digest_fails_and_leaves_no_file(s3, tmp_path):  # noqa: F811
    data = os.urandom(12 * MIB)
    manifest_parts = uploaded(s3, "obj", data)
    s3.put_object(Bucket=BUCKET, Key="obj", Body=data[:PART] + os.urandom(len(data) - PART))  # same size
    with pytest.raises(TransferError, match=r"s3://spotrun-test/obj failed verification: part [23] "):
        download_parts(s3, BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts, threads=2,
                       sleep=lambda seconds: None)
    assert not (tmp_path / "obj").exists()


def test_an_interrupted_download_fetches_only_the_parts_it_lacks(s3, tmp_path):  # noqa: F811
    data = os.urandom(17 * MIB)
    manifest_parts = uploaded(s3, "obj", data)

    class Failing(Recording):
        def get_object(self, **request: Any) -> Any:
            if request["Range"].startswith(f"bytes={2 * PART}-"):
                raise TransferError("the instance went away")
            return self.client.get_object(**request)
    with pytest.raises(TransferError, match="went away"):
        download_parts(Failing(s3), BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts, threads=1)
    spy = Recording(s3)
    download_parts(spy, BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts, threads=1)
    assert (tmp_path / "obj").read_bytes() == data
    assert [r["Range"] for r in spy.requests("get_object")] == [
        f"bytes={2 * PART}-{3 * PART - 1}", f"bytes={3 * PART}-{len(data) - 1}"]


def test_a_journaled_part_whose_local_bytes_are_wrong_is_fetched_again(s3, tmp_path):  # noqa: F811
    data = os.urandom(12 * MIB)
    manifest_parts = uploaded(s3, "obj", data)
    download_parts(s3, BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts)
    # an interrupted run's leftovers: all parts journaled, but part 1's bytes damaged on disk
    os.replace(tmp_path / "obj", tmp_path / "obj.part")
    etag = s3.head_object(Bucket=BUCKET, Key="obj")["ETag"]
    (tmp_path / "obj.parts").write_text(json.dumps({"etag": etag}) + "\n0\n1\n2\n")
    with (tmp_path / "obj.part").open("r+b") as damaged:
        damaged.write(b"\0" * 100)
    spy = Recording(s3)
    download_parts(spy, BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts)
    assert (tmp_path / "obj").read_bytes() == data
    assert [r["Range"] for r in spy.requests("get_object")] == [f"bytes=0-{PART - 1}"]


def test_an_object_that_changed_since_the_interrupted_run_is_fetched_again_whole(s3, tmp_path):  # noqa: F811
    data = os.urandom(12 * MIB)
    manifest_parts = uploaded(s3, "obj", data)
    (tmp_path / "obj.part").write_bytes(data)
    (tmp_path / "obj.parts").write_text('{"etag": "\\"an older object\\""}\n0\n1\n2\n')
    spy = Recording(s3)
    download_parts(spy, BUCKET, "obj", tmp_path / "obj", len(data), manifest_parts)
    assert len(spy.requests("get_object")) == 3


def test_a_missing_object_or_a_size_that_disagrees_is_a_clear_error(s3, tmp_path):  # noqa: F811
    with pytest.raises(TransferError, match="s3://spotrun-test/nothing does not exist"):
        download_parts(s3, BUCKET, "nothing", tmp_path / "x", 1, [{"size": 1, "crc32": "AAAAAA=="}])
    manifest_parts = uploaded(s3, "obj", b"abc")
    with pytest.raises(TransferError, match="add up to 3 bytes, not 4"):
        download_parts(s3, BUCKET, "obj", tmp_path / "x", 4, manifest_parts)
