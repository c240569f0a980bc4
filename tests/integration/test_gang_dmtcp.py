"""Gang checkpoints with DMTCP for real: two ranks of the ring program (real processes talking over TCP
every step), each under its own GangDmtcpCheckpointer (its own work path and DMTCP_TMPDIR, as separate
machines), all their processes joined to one coordinator on rank 0's address. One gang round (one
`dmtcp_command -c` on rank 0) commits both ranks' images under one manifest; the gang is killed; a new gang
restores them against a new coordinator on a new port and finishes with an uninterrupted run's result."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from spotrun.attempts import claim
from spotrun.domain.spec import JobSpec
from spotrun_local.programs import ring
from spotrun_worker import gang
from spotrun_worker.checkpointers import CheckpointError, DmtcpGang, GangDmtcpCheckpointer
from spotrun_worker.checkpointers.dmtcp_tools import find_tools, gang_patch_problem
from spotrun_worker.routes import InProcessRoutes
from spotrun_worker.workspace import Workspace
from tests.integration.test_gang import GANG, rank_ref
from tests.integration.test_gang_checkpoints import serve
from tests.integration.test_task_flow import Loop
from tests.support import wait_for

pytestmark = pytest.mark.slow

DMTCP_GANG = {**GANG, "checkpoint": {"method": "dmtcp", "interval": 3600}}
ADDRESSES = ("127.77.202.2", "127.77.202.3")
STEPS, SIZE, SLEEP = 150, 16, 0.03


class Rank:
    """One rank: its program under the gang DMTCP checkpointer, and its checkpoint cycle."""

    def __init__(self, cp: Any, s3: Any, task: Any, rank: int, root: Path, ports: tuple[int, int], clock: Any,
                 dmtcp_bin: Path, restore_timeout: float = 60.0):
        self.ref = rank_ref(task, rank)
        self.routes = InProcessRoutes(cp, self.ref.instance_id, s3=s3)
        # the same absolute work path at a restore, as on every instance (DMTCP restores open files there)
        self.workspace = Workspace(root / f"rank-{rank}" / task.job_id / "0", task.attempt).create()
        program_port, coordinator_port = ports
        self.checkpointer = GangDmtcpCheckpointer(DmtcpGang(rank, 2, ADDRESSES[0], coordinator_port),
                                                  bin_dir=dmtcp_bin, restore_timeout=restore_timeout)
        spec = JobSpec.model_validate(DMTCP_GANG)
        self.cycle = gang.GangCheckpointCycle(self.routes, cp.settings.bucket, self.ref, spec, self.workspace,
                                              self.checkpointer, clock, 60.0, 30.0, nodes=2)
        members = gang.Gang(rank, 2, ADDRESSES, program_port, coordinator_port)
        self.env = {"PATH": "/usr/bin:/bin", **members.environment(members.write_hostfile(
            self.workspace.state_dir / "hostfile"))}

    def start(self, restore_from: Path | None = None) -> None:
        self.checkpointer.start([sys.executable, ring.__file__, "--steps", str(STEPS), "--size", str(SIZE),
                                 "--sleep", str(SLEEP)], self.env, self.workspace.workdir, self.workspace.log_path,
                                restore_from=restore_from)

    def log(self) -> str:
        return self.workspace.log_path.read_text(errors="replace") if self.workspace.log_path.exists() else ""


def start_together(ranks: list[Rank], restore_from: list[Path]) -> None:
    """Restores block until the whole gang runs again: every rank's start at once, as on separate instances."""
    failures: list[BaseException] = []

    def one(rank: Rank, source: Path) -> None:
        try:
            rank.start(source)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            failures.append(error)

    threads = [threading.Thread(target=one, args=(r, s)) for r, s in zip(ranks, restore_from, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    if failures:
        raise failures[0]


def test_the_gang_build_of_dmtcp_is_the_patched_one(dmtcp_bin):
    assert gang_patch_problem(find_tools(dmtcp_bin)) is None


def test_one_dmtcp_checkpoint_of_the_gang_is_restored_on_a_new_gang_which_finishes_correctly(
        cp, env, aws, context, clock, tmp_path, dmtcp_bin):
    loop = Loop(cp, env, aws, context)
    task = loop.launch(DMTCP_GANG)  # the spec takes dmtcp for a gang
    job_id = task.job_id
    claim(cp, rank_ref(task, 0))
    s3 = aws.client("s3")
    ports = (gang.free_port(ADDRESSES[0]), gang.free_port(ADDRESSES[0]))
    ranks = [Rank(cp, s3, task, rank, tmp_path, ports, clock, dmtcp_bin) for rank in (0, 1)]
    stop, errors = threading.Event(), []
    follower = threading.Thread(target=serve, args=(ranks[1], stop, errors), daemon=True)
    try:
        for rank in ranks:  # rank 0 first: its coordinator must be up (rank 1 waits for it anyway)
            rank.start()
        follower.start()
        wait_for(lambda: all("ring up" in r.log() for r in ranks), 60, "the ring")
        clients = ranks[0].checkpointer.clients()
        assert len(clients) == 2 and all(c.state == "RUNNING" for c in clients)  # both ranks, one coordinator
        time.sleep(0.5)
        assert ranks[0].cycle.take() == 1
        pointer = loop.task(job_id).checkpoint
        assert pointer.seq == 1 and pointer.ranks == 2 and pointer.method == "dmtcp"
        manifest = json.loads(s3.get_object(Bucket=cp.settings.bucket, Key=f"{pointer.key}/manifest.json")["Body"].read())
        assert [r["rank"] for r in manifest["ranks"]] == [0, 1]
        for part in manifest["ranks"]:  # each rank's own image, written by the one checkpoint
            assert [f["name"] for f in part["files"] if f["name"].endswith(".dmtcp")], part
        assert not errors, errors
        assert all(r.checkpointer.poll() is None for r in ranks)  # still mid-run: the restore has work left
    finally:
        stop.set()
        if follower.is_alive():
            follower.join(10)
        for rank in (ranks[1], ranks[0]):
            rank.checkpointer.stop(grace_seconds=2)

    # the next gang: each rank downloads its own part; a new coordinator (new port) on rank 0 first
    loop_task = loop.task(job_id)
    restored = [gang.restore_part(r.routes, cp.settings.bucket, r.ref, loop_task, r.workspace, 2) for r in ranks]
    assert all(part is not None and part[1] == 1 for part in restored)
    new_ports = (gang.free_port(ADDRESSES[0]), gang.free_port(ADDRESSES[0]))
    again = [Rank(cp, s3, task, rank, tmp_path, new_ports, clock, dmtcp_bin) for rank in (0, 1)]
    try:
        start_together(again, [part[0] for part in restored if part is not None])
        assert all(c.state == "RUNNING" for c in again[0].checkpointer.clients())
        for rank in again:
            assert rank.checkpointer.wait(120) == 0, rank.log()[-2000:]
    finally:
        for rank in again:
            rank.checkpointer.stop(grace_seconds=2)
    result = json.loads((again[0].workspace.workdir / "result.json").read_text())
    assert result == {"nodes": 2, "steps": STEPS, "digest": ring.reference(2, STEPS, SIZE)}


def test_a_rank_whose_gang_never_restores_is_killed_in_bounded_time_with_a_clear_error(
        cp, env, aws, context, clock, tmp_path, dmtcp_bin):
    """Rank 0's images restored alone (rank 1 never comes): DMTCP waits for the missing rank forever; the
    checkpointer gives up at its timeout, kills what it started and says why."""
    loop = Loop(cp, env, aws, context)
    task = loop.launch(DMTCP_GANG)
    s3 = aws.client("s3")
    ports = (gang.free_port(ADDRESSES[0]), gang.free_port(ADDRESSES[0]))
    ranks = [Rank(cp, s3, task, rank, tmp_path, ports, clock, dmtcp_bin) for rank in (0, 1)]
    follower_stop, errors = threading.Event(), []
    follower = threading.Thread(target=serve, args=(ranks[1], follower_stop, errors), daemon=True)
    claim(cp, rank_ref(task, 0))
    try:
        for rank in ranks:
            rank.start()
        follower.start()
        wait_for(lambda: all("ring up" in r.log() for r in ranks), 60, "the ring")
        assert ranks[0].cycle.take() == 1
    finally:
        follower_stop.set()
        follower.join(10)
        for rank in (ranks[1], ranks[0]):
            rank.checkpointer.stop(grace_seconds=2)
    part = gang.restore_part(ranks[0].routes, cp.settings.bucket, ranks[0].ref, loop.task(task.job_id),
                             ranks[0].workspace, 2)
    assert part is not None
    alone = Rank(cp, s3, task, 0, tmp_path, (gang.free_port(ADDRESSES[0]), gang.free_port(ADDRESSES[0])), clock,
                 dmtcp_bin, restore_timeout=8.0)
    started = time.monotonic()
    try:
        with pytest.raises(CheckpointError, match="restore did not finish within 8s .*RESTARTING"):
            alone.start(part[0])
        assert time.monotonic() - started < 40
        pid = alone.checkpointer.pid
        assert pid is not None
        wait_for(lambda: alone.checkpointer.poll() is not None, 10, "the stuck restart to be killed")
    finally:
        alone.checkpointer.stop(grace_seconds=1)
