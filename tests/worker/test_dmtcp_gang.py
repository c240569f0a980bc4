"""The gang DMTCP checkpointer's refusals and command lines (fast; the real runs are in
tests/integration/test_gang_dmtcp.py and tests/local/test_gang_dmtcp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotrun_worker.checkpointers import (
    CheckpointerUnavailable,
    DmtcpCheckpointer,
    DmtcpGang,
    GangDmtcpCheckpointer,
    make_checkpointer,
)
from spotrun_worker.checkpointers.dmtcp import command_argv, coordinator_argv, launch_argv, restart_argv
from spotrun_worker.checkpointers.dmtcp_tools import (
    PIN_FILE,
    STAMP_NAME,
    DmtcpTools,
    find_tools,
    gang_patch_problem,
)

PIN = dict(line.split("=", 1) for line in PIN_FILE.read_text().splitlines() if "=" in line and not line.startswith("#"))
PATCHED = f"DMTCP_PATCH={PIN['DMTCP_PATCH']} sha256:{PIN['DMTCP_PATCH_SHA256']}"
TOOLS = DmtcpTools(Path("/d/bin/dmtcp_coordinator"), Path("/d/bin/dmtcp_launch"), Path("/d/bin/dmtcp_command"),
                   Path("/d/bin/dmtcp_restart"))


def fake_dmtcp(prefix: Path, stamp: str | None) -> Path:
    """Four tools that say they are 4.2.0, and install-dmtcp.sh's stamp (or none) above them."""
    (prefix / "bin").mkdir(parents=True)
    for name in ("dmtcp_coordinator", "dmtcp_launch", "dmtcp_command", "dmtcp_restart"):
        tool = prefix / "bin" / name
        tool.write_text("#!/bin/sh\necho 'dmtcp_launch (DMTCP) 4.2.0'\n")
        tool.chmod(0o755)
    if stamp is not None:
        (prefix / STAMP_NAME).write_text(stamp)
    return prefix / "bin"


def test_only_a_dmtcp_built_with_the_pinned_gang_patch_checkpoints_a_gang(tmp_path):
    patched = fake_dmtcp(tmp_path / "patched", f"DMTCP_VERSION=4.2.0\nDMTCP_SOURCE=x\n{PATCHED}\n")
    assert gang_patch_problem(find_tools(patched)) is None
    gang = DmtcpGang(rank=1, nodes=2, coordinator_host="10.0.0.5", coordinator_port=7000)
    assert isinstance(make_checkpointer("dmtcp", bin_dir=patched, gang=gang), GangDmtcpCheckpointer)
    for name, stamp in (("stock", "DMTCP_VERSION=4.2.0\nDMTCP_SOURCE=x\n"), ("none", None),
                        ("other", "DMTCP_VERSION=4.2.0\nDMTCP_PATCH=dmtcp-gang.patch sha256:0123\n")):
        bin_dir = fake_dmtcp(tmp_path / name, stamp)
        with pytest.raises(CheckpointerUnavailable) as refused:
            make_checkpointer("dmtcp", bin_dir=bin_dir, gang=gang)
        assert "checkpointing a gang needs DMTCP 4.2.0 built with spotrun's gang patch" in str(refused.value)
        assert str(refused.value).endswith("choose checkpoint.method: signal|none")
        # a task of one instance does not need the patch
        assert type(make_checkpointer("dmtcp", bin_dir=bin_dir)) is DmtcpCheckpointer
    # the signal method ignores the gang option, as every option meant for another method
    assert make_checkpointer("signal", gang=gang).method == "signal"


def test_every_rank_names_rank_0s_coordinator_and_rank_0_listens_on_the_gangs_port(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert launch_argv(TOOLS, 7000, ckpt, ["python", "x.py"], host="10.0.0.5")[:6] == [
        "/d/bin/dmtcp_launch", "-j", "-h", "10.0.0.5", "-p", "7000"]
    assert restart_argv(TOOLS, 7000, ckpt, [ckpt / "a.dmtcp"], host="10.0.0.5")[:6] == [
        "/d/bin/dmtcp_restart", "-j", "-h", "10.0.0.5", "-p", "7000"]
    assert command_argv(TOOLS, 7000, "-c", host="10.0.0.5") == ["/d/bin/dmtcp_command", "-h", "10.0.0.5", "-p",
                                                                "7000", "-c"]
    assert coordinator_argv(TOOLS, tmp_path / "p", tmp_path / "l", ckpt, port=7000)[3:5] == ["-p", "7000"]
    # a task of one instance: its own coordinator, on a free port, no host
    assert "-h" not in launch_argv(TOOLS, 7000, ckpt, ["python"]) and command_argv(TOOLS, 1, "-l")[1] == "-p"
