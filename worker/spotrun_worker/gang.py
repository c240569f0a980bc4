"""A gang task's side of the agent: the rendezvous of its ranks, and checkpoints taken together.

A gang task (the job's `nodes` > 1) runs each attempt on N instances; each instance's agent knows its
rank from the worker routes. The ranks talk to each other through the task's own S3 prefix (the
only place every rank's task credentials reach), under `checkpoints/<job>/<task>/`:

- **Rendezvous** (`gang/<attempt>/rank-<r>.json`): every rank publishes its private address (the
  metadata service's `local-ipv4`); rank 0 adds a port it found free for the program's rendezvous.
  Once all N are there, each agent writes the hostfile (one address per line, by rank) and gives
  the program SPOTRUN_NODE_RANK, SPOTRUN_NODES, SPOTRUN_HOSTFILE, SPOTRUN_NODE_ADDR,
  SPOTRUN_MASTER_ADDR and SPOTRUN_MASTER_PORT.
- **Gang checkpoints** (method `signal`): rank 0 alone decides when (its interval, an early request,
  the final one when any rank of the gang is to be reclaimed, or a suspend) and opens a *round*
  (`gang/<attempt>/round.json`: sequence, round id, final or not). Every rank, rank 0 included, signals
  its program, captures its part and uploads it under `<seq>/rank-<r>/files/`, then writes its part's
  manifest (`<seq>/rank-<r>.json`: the round, its files with sizes and SHA-256). Rank 0 waits for
  every rank's part of that round, writes the one manifest naming them all (`<seq>/manifest.json`),
  and only then moves the task's pointer, by the same conditional write as a task of one instance,
  saying how many ranks it holds; the control plane commits nothing else for a gang. A rank whose part
  never arrives (its upload died, its instance is gone) leaves the round without a manifest: that
  partial checkpoint is never committed, so never restored, and the one before it stands.
- **Restore**: every rank reads the pointer and the manifest, which must name a part for each of the
  gang's N ranks (a manifest that does not is refused), and downloads its own part, verifying each file.

With method `dmtcp` (checkpointers.dmtcp_gang) every rank's processes are under one DMTCP coordinator on
rank 0, so rank 0's capture checkpoints the whole gang: it then writes `gang/<attempt>/captured.json`
(the round), and only then do the other ranks collect the images they wrote as their parts.

The programs save together: the signal reaches every rank in the same round, and a program of a gang
must save at a point its ranks agree on (the way distributed training saves at a step boundary:
docs/jobs.md, "Gangs"). See docs/decisions.md, "Gang tasks".
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from spotrun.domain.messages import AttemptRef
from spotrun.domain.model import Task
from spotrun_worker import checkpointers, transfer
from spotrun_worker.checkpointers import Checkpointer
from spotrun_worker.checkpointers.base import CheckpointError, CheckpointNotReady
from spotrun_worker.checkpoints import CheckpointCost, CheckpointCycle, checkpoint_prefix
from spotrun_worker.workspace import Workspace

log = logging.getLogger("spotrun.agent")

HOSTFILE_NAME = "hostfile"
# How often a rank other than 0 looks for a round rank 0 opened (one S3 GET each time).
ROUND_POLL_SECONDS = 0.5
PART_POLL_SECONDS = 0.2
# How long a rank's program may take to install its checkpoint signal's handler before a round it
# was asked to join fails.
READY_WAIT_SECONDS = 20.0


class GangError(RuntimeError):
    """The gang could not meet (a rank never published its address) or a round could not complete."""


def task_prefix(ref: AttemptRef) -> str:
    return f"checkpoints/{ref.job_id}/{ref.index}"


def gang_prefix(ref: AttemptRef) -> str:
    """Where the ranks of this attempt meet: its rendezvous and its rounds."""
    return f"{task_prefix(ref)}/gang/{ref.attempt:06d}"


def _read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object at `key`, or None while there is none. Listed first: the task role may list only its own
    prefix, and S3 answers a GetObject of a missing key with 403, not 404, to a role that cannot list it."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    if not listed or listed[0]["Key"] != key:
        return None
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None  # deleted since it was listed
        raise


def _put_json(s3: Any, bucket: str, key: str, value: dict[str, Any]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode(), ContentType="application/json")


def free_port(address: str) -> int:
    """A TCP port nothing listens on at `address` now (the kernel's pick), for the program's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Gang:
    """Who the ranks of this attempt are: their addresses by rank, and rank 0's rendezvous port."""

    rank: int
    nodes: int
    addresses: tuple[str, ...]
    port: int
    coordinator_port: int = 0  # where rank 0 runs the gang's DMTCP coordinator (checkpoint.method dmtcp)

    def environment(self, hostfile: Path) -> dict[str, str]:
        return {
            "SPOTRUN_NODE_RANK": str(self.rank), "SPOTRUN_NODES": str(self.nodes),
            "SPOTRUN_HOSTFILE": str(hostfile), "SPOTRUN_NODE_ADDR": self.addresses[self.rank],
            "SPOTRUN_MASTER_ADDR": self.addresses[0], "SPOTRUN_MASTER_PORT": str(self.port),
        }

    def write_hostfile(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{address}\n" for address in self.addresses))
        return path


def rendezvous(s3: Any, bucket: str, ref: AttemptRef, nodes: int, address: str, timeout: float,
               sleep: Callable[[float], None] = time.sleep) -> Gang:
    """Publish this rank's address (rank 0: and a free port), then wait for every rank's."""
    prefix = gang_prefix(ref)
    mine: dict[str, Any] = {"rank": ref.rank, "instance_id": ref.instance_id, "address": address}
    if ref.rank == 0:  # the program's rendezvous port, and the gang's DMTCP coordinator's (method dmtcp)
        mine["port"] = free_port(address)
        mine["coordinator_port"] = free_port(address)
    _put_json(s3, bucket, f"{prefix}/rank-{ref.rank}.json", mine)
    deadline = time.monotonic() + timeout
    found: dict[int, dict[str, Any]] = {ref.rank: mine}
    while True:
        for rank in range(nodes):
            if rank not in found:
                entry = _read_json(s3, bucket, f"{prefix}/rank-{rank}.json")
                if entry is not None:
                    found[rank] = entry
        if len(found) == nodes:
            return Gang(ref.rank, nodes, tuple(found[r]["address"] for r in range(nodes)), int(found[0]["port"]),
                        int(found[0].get("coordinator_port", 0)))
        if time.monotonic() > deadline:
            missing = sorted(set(range(nodes)) - set(found))
            raise GangError(f"ranks {missing} of the gang did not publish their address within {timeout:g}s")
        sleep(0.2)


class GangCheckpointCycle(CheckpointCycle):
    """The checkpoint cycle of one rank of a gang (see the module's docstring for the protocol).

    Rank 0 opens the rounds (`take`, from the supervisor as for a task of one instance); every other
    rank serves them (`serve_rounds`, polled by the supervisor) and never commits; for it, `take(final=True)`
    (the supervisor leaving) waits for rank 0's final round and serves it.
    """

    def __init__(self, routes: Any, bucket: str, ref: AttemptRef, spec: Any, workspace: Workspace,
                 checkpointer: Checkpointer, clock: Callable[[], datetime], default_timeout: float,
                 min_interval: float, cost: CheckpointCost | None = None, nodes: int = 2, **base: Any):
        super().__init__(routes, bucket, ref, spec, workspace, checkpointer, clock, default_timeout, min_interval, cost,
                         **base)
        self.nodes = nodes
        self.rank = ref.rank
        self.served_round: str | None = None
        self.next_round_poll = 0.0
        self.ending: str | None = None  # how rank 0 said the gang ends, once its final round was served

    @property
    def follows_rounds(self) -> bool:
        return self.rank != 0

    # ----------------------------------------------------------- rank 0

    def take(self, timeout: float | None = None, final: bool = False) -> int | None:
        timeout = timeout or self.default_timeout
        if self.rank != 0:
            return self._await_final_round(timeout) if final else None
        started = time.monotonic()
        self._require_ready()
        current = self.routes.store.get_task(self.ref.job_id, self.ref.index)
        seq = (current.checkpoint.seq if current and current.checkpoint else 0) + 1
        round_id = uuid.uuid4().hex
        _put_json(self.routes.s3, self.bucket, f"{gang_prefix(self.ref)}/round.json",
                  {"seq": seq, "round": round_id, "final": final, "opened_at": self.clock().isoformat()})
        deadline = started + timeout
        mine = self._capture_part(seq, round_id, final, deadline)
        parts = self._await_parts(seq, round_id, mine, deadline)
        prefix = checkpoint_prefix(self.ref, seq)
        size = sum(p["bytes"] for p in parts)
        manifest = {
            "seq": seq, "job_id": self.ref.job_id, "index": self.ref.index, "attempt": self.ref.attempt,
            "method": self.checkpointer.method, "nodes": self.nodes, "round": round_id, "bytes": size,
            "ranks": [{"rank": p["rank"], "instance_id": p["instance_id"], "files": p["files"], "bytes": p["bytes"]}
                      for p in parts],
            "facts": checkpointers.environment_facts(), "created_at": self.clock().isoformat(),
        }
        _put_json(self.routes.s3, self.bucket, f"{prefix}/manifest.json", manifest)
        committed = self.routes.commit(self.ref, seq, size, self.checkpointer.method, self.clock(), ranks=self.nodes)
        if not committed:
            log.warning("gang checkpoint %s was not committed (superseded or out of order)", seq)
            return None
        self.cost.samples.append(time.monotonic() - started)
        self.cost.bytes_total += size
        self.taken += 1
        self.forget_older_than(seq)
        return seq

    def _require_ready(self) -> None:
        """Open no round the program cannot be asked to join yet (its handler is not installed)."""
        ready = getattr(self.checkpointer, "ready", None)
        if ready is not None and not ready():
            raise CheckpointNotReady("the program does not handle the checkpoint signal yet: no round opened")

    def _await_parts(self, seq: int, round_id: str, mine: dict[str, Any], deadline: float) -> list[dict[str, Any]]:
        prefix = checkpoint_prefix(self.ref, seq)
        parts: dict[int, dict[str, Any]] = {0: mine}
        while len(parts) < self.nodes:
            for rank in range(1, self.nodes):
                if rank in parts:
                    continue
                part = _read_json(self.routes.s3, self.bucket, f"{prefix}/rank-{rank}.json")
                if part is None or part.get("round") != round_id:
                    continue
                if part.get("error"):
                    raise CheckpointError(f"rank {rank} could not take its part of gang checkpoint {seq}: {part['error']}")
                parts[rank] = part
            if len(parts) == self.nodes:
                break
            if time.monotonic() > deadline:
                missing = sorted(set(range(self.nodes)) - set(parts))
                raise CheckpointError(f"gang checkpoint {seq} is partial: no part from ranks {missing} in time; "
                                      f"it is not committed (the last committed checkpoint stands)")
            self.sleep(PART_POLL_SECONDS)
        return [parts[r] for r in range(self.nodes)]

    # ------------------------------------------------------- every rank

    def _capture_part(self, seq: int, round_id: str, final: bool, deadline: float) -> dict[str, Any]:
        """This rank's part of a round: capture, upload its files, then its part's manifest."""
        into = self.workspace.state_dir / "outgoing" / str(seq)
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        on_rank0 = getattr(self.checkpointer, "captures_on_rank0", False)  # dmtcp: one checkpoint for the gang
        try:
            if on_rank0 and self.rank != 0:
                self._await_rank0_capture(round_id, deadline)
            files = self.checkpointer.checkpoint(into, max(1.0, deadline - time.monotonic()))
        except CheckpointError as error:
            if self.rank != 0:  # rank 0 hears of it at once instead of waiting out the round
                self._put_part(seq, {"round": round_id, "rank": self.rank, "error": str(error)[:500]})
            elif on_rank0:  # the other ranks hear of it at once instead of waiting out the round
                _put_json(self.routes.s3, self.bucket, f"{gang_prefix(self.ref)}/captured.json",
                          {"round": round_id, "error": str(error)[:500]})
            raise
        if on_rank0 and self.rank == 0:  # every rank's images are written: the other ranks collect theirs
            _put_json(self.routes.s3, self.bucket, f"{gang_prefix(self.ref)}/captured.json", {"round": round_id})
        captured_at = time.monotonic()
        if final:
            self.freeze()
        prefix = checkpoint_prefix(self.ref, seq)
        entries = transfer.upload_files(self.routes.s3, self.bucket, f"{prefix}/rank-{self.rank}/files", files, into)
        part = {"round": round_id, "rank": self.rank, "instance_id": self.ref.instance_id,
                "files": [e.__dict__ for e in entries], "bytes": sum(e.size for e in entries)}
        self._put_part(seq, part)
        shutil.rmtree(into, ignore_errors=True)
        self.last_saved_at = captured_at  # as far as this rank knows: rank 0 commits it
        return part

    def _await_rank0_capture(self, round_id: str, deadline: float) -> None:
        """Method dmtcp: rank 0's one `dmtcp_command -c` checkpoints every rank; wait until it completed."""
        while True:
            captured = _read_json(self.routes.s3, self.bucket, f"{gang_prefix(self.ref)}/captured.json")
            if captured is not None and captured.get("round") == round_id:
                if captured.get("error"):
                    raise CheckpointError(f"rank 0's checkpoint of the gang failed: {captured['error']}")
                return
            if time.monotonic() > deadline:
                raise CheckpointError("rank 0 did not report the gang's checkpoint complete in time")
            self.sleep(PART_POLL_SECONDS)

    def _put_part(self, seq: int, part: dict[str, Any]) -> None:
        _put_json(self.routes.s3, self.bucket, f"{checkpoint_prefix(self.ref, seq)}/rank-{self.rank}.json", part)

    # ------------------------------------------------------- ranks > 0

    def serve_rounds(self) -> str | None:
        """Join a round rank 0 opened since the last one served (polled, at most every ROUND_POLL_SECONDS).
        Returns how the gang ends once this rank served a final round, else None."""
        now = time.monotonic()
        if now < self.next_round_poll:
            return None
        self.next_round_poll = now + ROUND_POLL_SECONDS
        opened = _read_json(self.routes.s3, self.bucket, f"{gang_prefix(self.ref)}/round.json")
        if opened is None or opened.get("round") == self.served_round:
            return None
        self.served_round = opened["round"]
        self._wait_ready(opened)
        self._capture_part(int(opened["seq"]), opened["round"], bool(opened.get("final")),
                           time.monotonic() + self.default_timeout)
        self.taken += 1
        if opened.get("final"):
            self.ending = "interrupted"
            return self.ending
        return None

    def _wait_ready(self, opened: dict[str, Any]) -> None:
        ready = getattr(self.checkpointer, "ready", None)
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while ready is not None and not ready():
            if time.monotonic() > deadline:
                self._put_part(int(opened["seq"]), {"round": opened["round"], "rank": self.rank,
                                                     "error": "the program does not handle the checkpoint signal"})
                raise CheckpointNotReady("the program does not handle the checkpoint signal: round not joined")
            self.sleep(0.1)

    def _await_final_round(self, timeout: float) -> int | None:
        """This rank is to leave (its instance is reclaimed, the gang replaced or suspended): serve rounds
        until rank 0's final one, or until `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.next_round_poll = 0.0
            if self.serve_rounds() is not None:
                return None  # rank 0 commits; this rank has no sequence of its own to report
            if self.frozen_at is not None:
                return None
            self.sleep(ROUND_POLL_SECONDS)
        log.warning("rank %s: no final gang round from rank 0 within %gs", self.rank, timeout)
        return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def interval(self) -> float:
        if self.rank != 0:
            return float("inf")  # rank 0 decides when the gang checkpoints
        return super().interval()


def restore_part(routes: Any, bucket: str, ref: AttemptRef, task: Task, workspace: Workspace,
                 nodes: int) -> tuple[Path, int] | None:
    """Download this rank's part of the committed gang checkpoint, verifying every file; refuse a manifest
    that does not hold a part for each of the gang's ranks."""
    pointer = routes.store.get_task(task.job_id, task.index).checkpoint
    if pointer is None:
        return None
    s3 = routes.s3
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{pointer.key}/manifest.json")["Body"].read())
    ranks = {int(entry["rank"]): entry for entry in manifest.get("ranks", [])}
    if sorted(ranks) != list(range(nodes)):
        raise GangError(f"checkpoint {pointer.seq} is not a whole gang checkpoint: it holds ranks {sorted(ranks)}, "
                        f"the gang has {nodes}; it is not restored")
    ok, why = checkpointers.compatible(manifest.get("facts", {}), checkpointers.environment_facts(), manifest["method"])
    if not ok:
        raise RuntimeError(f"checkpoint {pointer.seq} cannot be restored here: {why}")
    target = workspace.state_dir / "incoming" / str(pointer.seq)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for entry in ranks[ref.rank]["files"]:
        transfer.download_file(s3, bucket, f"{pointer.key}/rank-{ref.rank}/files/{entry['name']}",
                               target / entry["name"], expected_size=entry["size"], expected_sha256=entry["sha256"])
    if ref.rank == 0:  # the gang's restore is one event on the timeline (each rank verified its own part)
        routes.restored(ref, pointer.seq, pointer.attempt)
    return target, pointer.seq
