"""One attempt's files on the instance: its work directory, inputs staged in, outputs and log sent out.

The task works in `<work root>/<job>/<index>/` (the same absolute path on every instance, so a
restored program finds its files where it left them); spotrun's own files (the attempt's log, the
progress file, checkpoints on their way in and out) live under `.spotrun/` inside it.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun.domain.messages import AttemptRef
from spotrun_worker import transfer

LOG_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Workspace:
    """Where one attempt of one task keeps its files."""

    workdir: Path
    attempt: int

    @classmethod
    def for_attempt(cls, work_root: Path, ref: AttemptRef) -> Workspace:
        return cls(work_root / ref.job_id / str(ref.index), ref.attempt)

    @property
    def state_dir(self) -> Path:
        return self.workdir / ".spotrun"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"attempt-{self.attempt}.log"

    @property
    def progress_path(self) -> Path:
        return self.state_dir / "progress"

    @property
    def inputs_dir(self) -> Path:
        return self.workdir / "inputs"

    @property
    def task_outputs_dir(self) -> Path:
        """Where a combine task finds every task's outputs."""
        return self.workdir / "task-outputs"

    def create(self) -> Workspace:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        return self

    def log_tail(self, size: int = LOG_TAIL_BYTES) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - size))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def match_outputs(self, patterns: list[str]) -> tuple[list[Path], list[str]]:
        """The files the output patterns match inside the work directory (never outside it), and the
        patterns that matched no file: a declared output that is missing is reported, never skipped."""
        files: dict[Path, None] = {}  # in pattern order, each file once
        unmatched: list[str] = []
        for pattern in patterns:
            matched = [path for path in map(Path, sorted(glob.glob(str(self.workdir / pattern), recursive=True)))
                       if path.is_file() and self.workdir in path.resolve().parents]
            if not matched:
                unmatched.append(pattern)
            files.update(dict.fromkeys(matched))
        return list(files), unmatched


def outputs_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/outputs/"


def stage_inputs(s3: Any, uris: list[str], workspace: Workspace) -> None:
    """Download the job's inputs into `inputs/` (TransferError when one is missing or unreadable)."""
    for uri in uris:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        transfer.download_file(s3, bucket, key, workspace.inputs_dir / Path(key).name)


def stage_task_outputs(s3: Any, bucket: str, ref: AttemptRef, workspace: Workspace) -> None:
    """The combine task sees every task's outputs under task-outputs/<index>/, with a manifest."""
    prefix = outputs_prefix(ref.job_id)
    target = workspace.task_outputs_dir
    listing = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix):]
            if relative.split("/", 1)[0] == str(ref.index):
                continue
            transfer.download_file(s3, bucket, item["Key"], target / relative, expected_size=item["Size"])
            listing.append({"path": relative, "bytes": item["Size"]})
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.json").write_text(json.dumps({"outputs": listing}, indent=1))


def upload_outputs(s3: Any, bucket: str, ref: AttemptRef, workspace: Workspace, patterns: list[str]) -> list[str]:
    """Upload every file the patterns match; the patterns that matched none (to be reported)."""
    files, unmatched = workspace.match_outputs(patterns)
    if files:
        transfer.upload_files(s3, bucket, f"{outputs_prefix(ref.job_id)}{ref.index}", files, workspace.workdir)
    return unmatched


def upload_log(s3: Any, bucket: str, ref: AttemptRef, workspace: Workspace) -> None:
    if workspace.log_path.exists():
        s3.upload_file(str(workspace.log_path), bucket, f"jobs/{ref.job_id}/logs/{ref.index}/attempt-{ref.attempt}"
                       f"{f'-rank-{ref.rank}' if ref.rank else ''}.log")
