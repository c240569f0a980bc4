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
from spotrun_worker import checkpointers, finalfit, parts, ranges, transfer
from spotrun_worker.checkpointers import Checkpointer
from spotrun_worker.workspace import Workspace

log = logging.getLogger("spotrun.agent")


@dataclass
class CheckpointCost:
    """Measured capture + upload seconds, for the adaptive interval and the benchmarks."""

    samples: list[float] = field(default_factory=list)
    bytes_total: int = 0
    commit_seconds: float = 0.0  # the last manifest + commit

    @property
    def mean(self) -> float:
        return sum(self.samples[-5:]) / len(self.samples[-5:]) if self.samples else 0.0


def final_measures(measured: finalfit.Measured, fit: finalfit.Fit) -> dict[str, Any]:
    """What a commit tells the control plane about the final checkpoint and the rates it was predicted from."""
    return {"predicted_final_seconds": round(fit.predicted_seconds, 1), "final_fits_warning": fit.fits,
            "capture_bytes_per_second": round(measured.capture_bytes_per_second),
            "upload_bytes_per_second": round(measured.transfer_bytes_per_second),
            "final_budget_seconds": round(fit.budget_seconds, 1)}


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
                 min_interval: float, cost: CheckpointCost | None = None,
                 final_budget_seconds: float = finalfit.budget_seconds(finalfit.WARNING_SECONDS, 5.0, 10.0)):
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
        self.final_budget_seconds = final_budget_seconds
        self.final_fit: finalfit.Fit | None = None  # from the last committed checkpoint's measurements
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
        prefix = checkpoint_prefix(self.ref, seq)
        s3 = self.routes.s3
        # Parts go while the checkpointer still writes (a checkpointer that streams says which files
        # it is writing); nothing below is committed before every part and the manifest are in.
        upload = parts.CheckpointUpload(s3, self.bucket, f"{prefix}/files")
        streamed = bool(getattr(self.checkpointer, "streams_capture", False))
        capture_started = time.monotonic()
        try:
            if streamed:
                files = self.checkpointer.checkpoint(into, timeout or self.default_timeout, follow=upload.follow)
            else:
                files = self.checkpointer.checkpoint(into, timeout or self.default_timeout)
        except BaseException:
            upload.abort()
            raise
        captured_at = time.monotonic()  # the program's state as of now is in `files`
        if final:
            self.freeze()
        entries = upload.finish(files, into)
        uploaded_at = time.monotonic()
        size = sum(e.size for e in entries)
        manifest = {
            "seq": seq, "job_id": self.ref.job_id, "index": self.ref.index, "attempt": self.ref.attempt,
            "method": self.checkpointer.method, "files": [e.to_manifest() for e in entries], "bytes": size,
            "facts": checkpointers.environment_facts(), "created_at": self.clock().isoformat(),
        }
        s3.put_object(Bucket=self.bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode(),
                      ContentType="application/json")
        # The commit's own time is not known before it is made: the last one's, else the manifest's twice.
        commit_estimate = self.cost.commit_seconds or 2 * (time.monotonic() - uploaded_at)
        measured = finalfit.Measured(
            bytes=size, capture_seconds=captured_at - capture_started,
            transfer_seconds=uploaded_at - (capture_started if streamed else captured_at),
            commit_seconds=commit_estimate, streamed=streamed)
        fit = finalfit.fit(measured, self.final_budget_seconds)
        committing = time.monotonic()
        committed = self.routes.commit(self.ref, seq, size, self.checkpointer.method, self.clock(),
                                       measured=final_measures(measured, fit),
                                       seconds=uploaded_at - started)  # capture and upload: CheckpointSeconds
        self.cost.commit_seconds = time.monotonic() - committing + (committing - uploaded_at)
        shutil.rmtree(into, ignore_errors=True)
        if not committed:
            log.warning("checkpoint %s was not committed (superseded or out of order)", seq)
            return None
        log.info("checkpoint %s committed: %.1f MiB in %.1f s", seq, size / 2**20, time.monotonic() - started)
        self.last_saved_at = captured_at
        self.cost.samples.append(time.monotonic() - started)
        self.cost.bytes_total += size
        if not fit.fits and (self.final_fit is None or self.final_fit.fits):
            log.warning("%s (budget %.0f s): checkpointing more often", fit.note, fit.budget_seconds)
        self.final_fit = fit
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
        return finalfit.checkpoint_interval(self.cost.mean or 5.0, self.final_fit, self.min_interval)


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
        key = f"{pointer.key}/files/{entry['name']}"
        dest = target / transfer._safe_relative(entry["name"], f"s3://{bucket}/{key}")
        if "parts" in entry:
            ranges.download_parts(s3, bucket, key, dest, entry["size"], entry["parts"])
        else:  # a manifest from before parts were recorded: one stream, whole-file SHA-256
            transfer.download_file(s3, bucket, key, dest, expected_size=entry["size"],
                                   expected_sha256=entry["sha256"])
    seconds = time.monotonic() - started  # the download: what the operators' RestoreSeconds measure
    log.info("restoring checkpoint %s of attempt %s (%.1f MiB, downloaded in %.1f s)", pointer.seq, pointer.attempt,
             pointer.size_bytes / 2**20, seconds)
    routes.restored(ref, pointer.seq, pointer.attempt, seconds=seconds)
    return target, pointer.seq
