"""Gang checkpoints for real: two ranks of the ring program (real processes talking over TCP), their agents'
checkpoint cycles against moto's S3 and the real control plane. A round commits once every rank's part is
in S3 under one manifest; a round one rank's upload died in is never committed, so never restored."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spotrun.attempts import claim
from spotrun.domain.spec import JobSpec
from spotrun_local.programs import ring
from spotrun_worker import gang, transfer
from spotrun_worker.checkpointers.base import CheckpointError
from spotrun_worker.checkpointers.cooperative import SignalCheckpointer
from spotrun_worker.config import AgentConfig
from spotrun_worker.routes import InProcessRoutes
from spotrun_worker.supervisor import Supervisor
from spotrun_worker.workspace import Workspace
from tests.integration.test_gang import GANG, rank_ref
from tests.integration.test_task_flow import Loop
from tests.support import wait_for

ADDRESSES = ("127.77.201.2", "127.77.201.3")


class Rank:
    """One rank of the gang: its program under the signal checkpointer, and its checkpoint cycle."""

    def __init__(self, cp: Any, s3: Any, task: Any, rank: int, root: Path, port: int, clock: Any):
        self.ref = rank_ref(task, rank)
        self.routes = InProcessRoutes(cp, self.ref.instance_id, s3=s3)
        self.workspace = Workspace(root / f"rank-{rank}" / task.job_id / "0", task.attempt).create()
        self.checkpointer = SignalCheckpointer()
        spec = JobSpec.model_validate({**GANG, "checkpoint": {"method": "signal", "interval": 3600}})
        self.cycle = gang.GangCheckpointCycle(self.routes, cp.settings.bucket, self.ref, spec, self.workspace,
                                              self.checkpointer, clock, 20.0, 30.0, nodes=2)
        hostfile = gang.Gang(rank, 2, ADDRESSES, port).write_hostfile(self.workspace.state_dir / "hostfile")
        env = {"PATH": "/usr/bin:/bin", **gang.Gang(rank, 2, ADDRESSES, port).environment(hostfile)}
        self.checkpointer.start([sys.executable, ring.__file__, "--steps", "100000", "--sleep", "0.02"], env,
                                self.workspace.workdir, self.workspace.log_path)


def running_gang(loop: Loop, aws: Any, clock: Any, tmp_path: Path) -> tuple[Any, Any, list[Rank]]:
    """A gang of 2 launched and claimed by rank 0, each rank's ring program started under the signal
    checkpointer: its task as launched, the S3 client, the ranks."""
    task = loop.launch(GANG)
    claim(loop.cp, rank_ref(task, 0))
    s3 = aws.client("s3")
    port = gang.free_port(ADDRESSES[0])
    return task, s3, [Rank(loop.cp, s3, task, rank, tmp_path, port, clock) for rank in (0, 1)]


def serve(rank: Any, stop: threading.Event, errors: list[BaseException]) -> None:
    """A follower rank's part of the gang's checkpoint rounds, served until `stop`; its errors kept in `errors`."""
    while not stop.is_set():
        try:
            rank.cycle.serve_rounds()
        except Exception as error:  # noqa: BLE001 - the test reads them
            errors.append(error)
        stop.wait(0.05)


def test_a_gang_checkpoint_missing_one_ranks_part_is_never_committed_nor_restored(
        cp, env, aws, context, clock, tmp_path, monkeypatch):
    loop = Loop(cp, env, aws, context)
    task, s3, ranks = running_gang(loop, aws, clock, tmp_path)
    job_id = task.job_id
    stop, errors = threading.Event(), []
    follower = threading.Thread(target=serve, args=(ranks[1], stop, errors), daemon=True)
    follower.start()
    try:
        # a whole round: both parts, one manifest, one pointer move naming 2 ranks
        wait_for(lambda: all(r.checkpointer.ready() for r in ranks), 10, "the programs' handlers")
        assert ranks[0].cycle.take() == 1
        pointer = loop.task(job_id).checkpoint
        assert pointer.seq == 1 and pointer.ranks == 2
        manifest = json.loads(s3.get_object(Bucket=cp.settings.bucket, Key=f"{pointer.key}/manifest.json")["Body"].read())
        assert [r["rank"] for r in manifest["ranks"]] == [0, 1] and all(r["files"] for r in manifest["ranks"])
        assert all(f["sha256"] for r in manifest["ranks"] for f in r["files"])

        # rank 1's upload is killed half-way through the next round
        real_upload = transfer.upload_files

        def upload(s3_: Any, bucket: str, prefix: str, files: Any, root: Path) -> Any:
            if "/rank-1/" in prefix:
                raise transfer.TransferError("upload killed (the instance died)")
            return real_upload(s3_, bucket, prefix, files, root)

        monkeypatch.setattr(gang.transfer, "upload_files", upload)
        with pytest.raises(CheckpointError, match="partial: no part from ranks \\[1\\]"):
            ranks[0].cycle.take(timeout=6.0)
        assert loop.task(job_id).checkpoint.seq == 1  # the pointer did not move
        assert any("upload killed" in str(e) for e in errors)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cp.settings.bucket,
                                                     Prefix=f"checkpoints/{job_id}/0/00000002/").get("Contents", [])]
        assert keys and not any(k.endswith("manifest.json") for k in keys)  # rank 0's part, no manifest
    finally:
        stop.set()
        follower.join(10)
        for rank in ranks:
            rank.checkpointer.stop()

    # the next gang restores checkpoint 1, each rank its own part
    saved = {}
    for rank in ranks:
        restored = gang.restore_part(rank.routes, cp.settings.bucket, rank.ref, loop.task(job_id),
                                     Workspace(tmp_path / f"next-{rank.ref.rank}" / job_id / "0", 2).create(), 2)
        assert restored is not None and restored[1] == 1
        saved[rank.ref.rank] = json.loads((restored[0] / "state.json").read_text())
    assert saved[0]["step"] == saved[1]["step"] and saved[0]["total"] == saved[1]["total"]  # one consistent cut
    assert saved[0]["vector"] != saved[1]["vector"]  # and each rank got its own part


def test_a_manifest_without_every_ranks_part_is_refused_at_restore(cp, env, aws, context, clock, tmp_path):
    loop = Loop(cp, env, aws, context)
    task = loop.launch(GANG)
    job_id = task.job_id
    claim(cp, rank_ref(task, 0))
    s3 = aws.client("s3")
    key = f"checkpoints/{job_id}/0/00000001"
    s3.put_object(Bucket=cp.settings.bucket, Key=f"{key}/manifest.json", Body=json.dumps(
        {"seq": 1, "method": "signal", "ranks": [{"rank": 0, "files": []}], "facts": {}}).encode())
    # committed by a rank 0 that claims 2 ranks (the control plane cannot read the manifest): restore still refuses
    from spotrun.assignments import commit

    assert commit(cp, task.gang_instances[0], task.attempt, 1, 0, "signal", clock(), ranks=2)
    ref = rank_ref(task, 1)
    with pytest.raises(gang.GangError, match="not a whole gang checkpoint"):
        gang.restore_part(InProcessRoutes(cp, ref.instance_id, s3=s3), cp.settings.bucket, ref, loop.task(job_id),
                          Workspace(tmp_path / job_id / "0", 2).create(), 2)


class Host:
    """What a rank's supervisor works for (spotrun_worker.supervisor.Host): its agent, minus the agent's own I/O."""

    def __init__(self, rank: Rank, clock: Any):
        self.config = AgentConfig(table="", bucket="", report_queue_url="", checkpoint_timeout_seconds=20.0)
        self.ref = rank.ref
        self.program_started = time.monotonic()
        self.store = rank.routes.store
        self.clock = clock
        self.reports: list[dict[str, Any]] = []

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def reclaim_notice(self) -> None:
        return None

    def heartbeat(self) -> None:
        pass

    def report(self, outcome: str, reason: str = "", program: Any = None, *, checkpoint_seq: int | None = None,
               unsaved_seconds: float | None = None) -> None:
        self.reports.append({"outcome": outcome, "reason": reason, "checkpoint_seq": checkpoint_seq})

    def upload_log(self) -> None:
        pass

    def upload_outputs(self, task: Any) -> list[str]:
        return []

    def log_tail(self) -> str:
        return ""

    def terminate_self(self) -> None:
        pass


def test_a_warned_rank_waits_for_the_final_round_that_rank_0_opens_once_the_control_plane_tells_it(
        cp, env, aws, context, clock, tmp_path):
    """Rank 1's instance is warned (the local runtime's time-scaled 12 s); rank 0 hears of it only from the
    control plane (the interruption handler replaces the task, rank 0's control read sees its attempt
    draining), here 4 s later: later than the final-checkpoint budget of the warned rank (12 s less the
    10 s margin) but long before the reclaim. The gang's final checkpoint must still commit: the warned
    rank waits for rank 0's round until its instance goes, and does not stop its program before it came
    (the ring program cannot save a step its other rank never reaches). bench/README.md, gang section:
    once in 9 runs rank 0 came 0.75 s after the warned rank's 1.07 s budget had run out."""
    loop = Loop(cp, env, aws, context)
    task, s3, ranks = running_gang(loop, aws, clock, tmp_path)
    job_id = task.job_id
    hosts = [Host(rank, clock) for rank in ranks]
    supervisors = [Supervisor(host, rank.checkpointer, rank.cycle) for host, rank in zip(hosts, ranks, strict=True)]
    stop, errors = threading.Event(), []
    follower = threading.Thread(target=serve, args=(ranks[1], stop, errors), daemon=True)
    follower.start()
    try:
        wait_for(lambda: all(r.checkpointer.ready() for r in ranks), 10, "the programs' handlers")
        assert ranks[0].cycle.take() == 1  # the early checkpoint the benchmark asks for
        stop.set()
        follower.join(10)

        warned_at = time.monotonic()
        reclaim_at = clock() + timedelta(seconds=12)  # the metadata notice's time (local: 12 s after the warning)
        leaving = threading.Thread(target=supervisors[1].leave, daemon=True,
                                   args=("interrupted", "spot terminate notice", reclaim_at))
        leaving.start()
        time.sleep(max(0.0, warned_at + 4.0 - time.monotonic()))  # rank 0's control read sees the replacement
        assert supervisors[0].leave("interrupted", "replaced after an interruption notice", None) == 0
        leaving.join(15)
        assert not leaving.is_alive()
    finally:
        stop.set()
        for rank in ranks:
            rank.checkpointer.stop()

    assert hosts[0].reports[-1]["checkpoint_seq"] == 2, hosts[0].reports
    pointer = loop.task(job_id).checkpoint
    assert pointer.seq == 2 and pointer.ranks == 2
    assert [r["outcome"] for h in hosts for r in h.reports] == ["interrupted", "interrupted"]
    assert not errors
