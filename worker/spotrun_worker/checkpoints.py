"""The checkpoint cycle of one attempt: capture, upload, manifest, commit, forget old ones; restore.

Commit protocol (docs/decisions.md, "Checkpoint commit protocol"): the checkpointer captures into a
fresh directory, the files go under `checkpoints/<job>/<task>/<seq>/files/`, then `manifest.json`
(sequence, files with sizes and checksums, checkpointer, environment facts), and only then the
task's pointer moves (a conditional write through the worker routes). A restore reads the pointer,
then the manifest, and verifies every file while downloading it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spotrun.domain.messages import AttemptRef
from spotrun.domain.model import Task
from spotrun.domain.spec import JobSpec
from spotrun_worker import checkpointers, interval, transfer
from spotrun_worker.checkpointers import Checkpointer
from spotrun_worker.workspace import Workspace

log = logging.getLogger("spotrun.agent")


@dataclass
class CheckpointCost:
    """Measured capture + upload seconds, for the adaptive interval and the benchmarks."""

    samples: list[float] = field(default_factory=list)
    bytes_total: int = 0

    @property
    def mean(self) -> float:
        return sum(self.samples[-5:]) / len(self.samples[-5:]) if self.samples else 0.0


def checkpoint_prefix(ref: AttemptRef, seq: int) -> str:
    return f"checkpoints/{ref.job_id}/{ref.index}/{seq:08d}"


class CheckpointCycle:
    """Takes and commits the checkpoints of one running program.

    `last_saved_at` is when the program's progress was last safe in a commit (monotonic seconds);
    `frozen_at` is set once the final checkpoint has stopped the program (SIGSTOP) right after its
    capture, so nothing it did afterwards can be lost: it did nothing.
    """

    def __init__(self, routes: Any, bucket: str, ref: AttemptRef, spec: JobSpec, workspace: Workspace,
                 checkpointer: Checkpointer, clock: Callable[[], datetime], default_timeout: float,
                 min_interval: float, cost: CheckpointCost | None = None):
        self.routes = routes
        self.bucket = bucket
        self.ref = ref
        self.spec = spec
        self.workspace = workspace
        self.checkpointer = checkpointer
        self.clock = clock
        self.default_timeout = default_timeout
        self.min_interval = min_interval
        self.cost = cost if cost is not None else CheckpointCost()
        self.last_saved_at = time.monotonic()
        self.frozen_at: float | None = None
        self.taken = 0

    def take(self, timeout: float | None = None, final: bool = False) -> int | None:
        """Capture, upload files, write the manifest, then move the pointer; keep the previous one.

        The sequence number, or None when the control plane did not commit it (superseded).
        """
        started = time.monotonic()
        current = self.routes.store.get_task(self.ref.job_id, self.ref.index)
        seq = (current.checkpoint.seq if current and current.checkpoint else 0) + 1
        into = self.workspace.state_dir / "outgoing" / str(seq)
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        files = self.checkpointer.checkpoint(into, timeout or self.default_timeout)
        captured_at = time.monotonic()  # the program's state as of now is in `files`
        if final:
            self.freeze()
        prefix = checkpoint_prefix(self.ref, seq)
        s3 = self.routes.s3
        entries = transfer.upload_files(s3, self.bucket, f"{prefix}/files", files, into)
        size = sum(e.size for e in entries)
        manifest = {
            "seq": seq, "job_id": self.ref.job_id, "index": self.ref.index, "attempt": self.ref.attempt,
            "method": self.checkpointer.method, "files": [e.__dict__ for e in entries], "bytes": size,
            "facts": checkpointers.environment_facts(), "created_at": self.clock().isoformat(),
        }
        s3.put_object(Bucket=self.bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode(),
                      ContentType="application/json")
        seconds = time.monotonic() - started  # capture and upload: what the operators' CheckpointSeconds measure
        committed = self.routes.commit(self.ref, seq, size, self.checkpointer.method, self.clock(), seconds=seconds)
        shutil.rmtree(into, ignore_errors=True)
        if not committed:
            log.warning("checkpoint %s was not committed (superseded or out of order)", seq)
            return None
        log.info("checkpoint %s committed: %.1f MiB in %.1f s", seq, size / 2**20, seconds)
        self.last_saved_at = captured_at
        self.cost.samples.append(time.monotonic() - started)
        self.cost.bytes_total += size
        self.taken += 1
        self.forget_older_than(seq)
        return seq

    def freeze(self) -> None:
        """Stop the program dead right after its final capture, so no progress follows the checkpoint
        (DMTCP suspends its processes the same way while it writes an image)."""
        pid = self.checkpointer.pid
        if pid is None:
            return
        try:
            os.killpg(os.getpgid(pid), signal.SIGSTOP)
            self.frozen_at = time.monotonic()
        except ProcessLookupError:
            pass

    def unsaved_seconds(self) -> float:
        """Progress not in any commit: up to the freeze, or up to now."""
        return (self.frozen_at or time.monotonic()) - self.last_saved_at

    def forget_older_than(self, committed: int) -> None:
        """Keep the committed checkpoint and the one before it; older ones are no longer needed."""
        prefix = f"checkpoints/{self.ref.job_id}/{self.ref.index}/"
        s3 = self.routes.s3
        old = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                part = item["Key"][len(prefix):].split("/", 1)[0]
                if part.isdigit() and int(part) < committed - 1:
                    old.append({"Key": item["Key"]})
        for start in range(0, len(old), 1000):
            s3.delete_objects(Bucket=self.bucket, Delete={"Objects": old[start:start + 1000], "Quiet": True})

    def interval(self) -> float:
        """Seconds to the next periodic checkpoint: the job's, or Young/Daly from the measured cost."""
        fixed = self.spec.checkpoint.interval
        if fixed != "auto":
            return float(fixed)
        return interval.checkpoint_interval(
            cost_seconds=self.cost.mean or 5.0, interruptions_per_hour=0.1, minimum=self.min_interval,
        )


def restore(routes: Any, bucket: str, ref: AttemptRef, task: Task, workspace: Workspace) -> tuple[Path, int] | None:
    """Download the committed checkpoint the task's pointer names, verifying every file.

    Returns the directory holding its files and its sequence number, or None without a checkpoint.
    """
    pointer = routes.store.get_task(task.job_id, task.index).checkpoint
    if pointer is None:
        return None
    started = time.monotonic()
    s3 = routes.s3
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{pointer.key}/manifest.json")["Body"].read())
    ok, why = checkpointers.compatible(manifest.get("facts", {}), checkpointers.environment_facts(), manifest["method"])
    if not ok:
        raise RuntimeError(f"checkpoint {pointer.seq} cannot be restored here: {why}")
    target = workspace.state_dir / "incoming" / str(pointer.seq)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for entry in manifest["files"]:
        transfer.download_file(s3, bucket, f"{pointer.key}/files/{entry['name']}", target / entry["name"],
                               expected_size=entry["size"], expected_sha256=entry["sha256"])
    seconds = time.monotonic() - started  # the download: what the operators' RestoreSeconds measure
    log.info("restoring checkpoint %s of attempt %s (%.1f MiB, downloaded in %.1f s)", pointer.seq, pointer.attempt,
             pointer.size_bytes / 2**20, seconds)
    routes.restored(ref, pointer.seq, pointer.attempt, seconds=seconds)
    return target, pointer.seq
