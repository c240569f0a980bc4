"""The `dmtcp` checkpointer.

Three layers: the pure parts (command lines, completion counting, image checks, restore staging);
the orchestration against a fake DMTCP we own (programs/fake_dmtcp.py: real processes and files,
no memory capture); and real programs through the real DMTCP 4.2.0 (built from ../shared/vendor by
`make dmtcp`; the `dmtcp_bin` fixture skips them only when that source is absent), each checkpointed,
lost, restored on "another instance" and compared with an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spotrun_worker.checkpointers import (
    CheckpointError,
    CheckpointerUnavailable,
    dmtcp,
    environment_facts,
    make_checkpointer,
)
from spotrun_worker.checkpointers.dmtcp import (
    COMPLETE_LINE,
    DmtcpCheckpointer,
    DmtcpTools,
    checkpoint_files,
    clear_stale_images,
    command_argv,
    coordinator_argv,
    count_completed,
    find_tools,
    gconv_dir,
    image_problem,
    launch_argv,
    move_checkpoint,
    parse_client_list,
    parse_version,
    program_env,
    restart_argv,
    stage_restore,
    wait_for_whole_images,
)
from spotrun_worker.parts import CheckpointUpload
from spotrun_worker.ranges import download_parts
from tests.support import wait_for
from tests.worker.support import PROGRAMS, read_int, read_json
from tests.worker.test_transfer import BUCKET, MIB, moto_s3, s3  # noqa: F401 - shared fixtures

HEADER = b"DMTCP_CHECKPOINT_IMAGE_v4.0\n"
TOOLS = DmtcpTools(Path("/opt/dmtcp/bin/dmtcp_coordinator"), Path("/opt/dmtcp/bin/dmtcp_launch"),
                   Path("/opt/dmtcp/bin/dmtcp_command"), Path("/opt/dmtcp/bin/dmtcp_restart"))


# ------------------------------------------------------------- pure parts


def test_missing_dmtcp_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(tmp_path))
    with pytest.raises(CheckpointerUnavailable) as raised:
        make_checkpointer("dmtcp", signal_name="SIGUSR1")
    assert str(raised.value) == (
        f"dmtcp: dmtcp_coordinator, dmtcp_launch, dmtcp_command and dmtcp_restart not found in {tmp_path} "
        "(SPOTRUN_DMTCP_BIN); install DMTCP 4.2.0 or choose checkpoint.method: signal|none")
    monkeypatch.delenv("SPOTRUN_DMTCP_BIN")
    with pytest.raises(CheckpointerUnavailable, match=r"^dmtcp: dmtcp_coordinator, .* not found on PATH; install"):
        find_tools(search_path=str(tmp_path))


def test_a_dmtcp_of_another_version_is_unavailable_and_says_which(tmp_path):
    for name in ("dmtcp_coordinator", "dmtcp_launch", "dmtcp_command", "dmtcp_restart"):
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\necho 'dmtcp_launch (DMTCP) 3.0.0'\n")
        tool.chmod(0o755)
    with pytest.raises(CheckpointerUnavailable) as raised:
        dmtcp.verified_tools(tmp_path)
    assert str(raised.value) == (f"dmtcp: {tmp_path}/dmtcp_launch --version says 3.0.0, expected 4.2.0; "
                                 "install DMTCP 4.2.0 or choose checkpoint.method: signal|none")
    assert dmtcp.verified_tools(tmp_path, expected="3.0.0").launch == tmp_path / "dmtcp_launch"


def test_the_pinned_version_is_read_from_the_pin_file():
    pin = dict(line.split("=", 1) for line in dmtcp.PIN_FILE.read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert dmtcp.pinned_version() == pin["DMTCP_VERSION"] == "4.2.0"


def test_command_lines(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert coordinator_argv(TOOLS, tmp_path / "port", tmp_path / "coord.log", ckpt) == [
        "/opt/dmtcp/bin/dmtcp_coordinator", "--daemon", "--exit-on-last", "-p", "0", "--port-file",
        str(tmp_path / "port"), "--coord-logfile", str(tmp_path / "coord.log"), "--ckptdir", str(ckpt)]
    assert launch_argv(TOOLS, 4242, ckpt, ["/bin/sh", "-c", "run"]) == [
        "/opt/dmtcp/bin/dmtcp_launch", "-j", "-p", "4242", "--ckptdir", str(ckpt), "--no-gzip", "--ckpt-open-files",
        "/bin/sh", "-c", "run"]
    assert "--no-gzip" not in launch_argv(TOOLS, 4242, ckpt, ["prog"], gzip=True)
    images = [ckpt / "ckpt_a.dmtcp", ckpt / "ckpt_b.dmtcp"]
    assert restart_argv(TOOLS, 4242, ckpt, images) == [
        "/opt/dmtcp/bin/dmtcp_restart", "-j", "-p", "4242", "--ckptdir", str(ckpt), *map(str, images)]
    with pytest.raises(ValueError):
        restart_argv(TOOLS, 4242, ckpt, [])
    assert command_argv(TOOLS, 4242, "-c") == ["/opt/dmtcp/bin/dmtcp_command", "-p", "4242", "-c"]


def test_program_environment_avoids_the_gconv_pitfall_and_compression():
    env = program_env({"PATH": "/usr/bin", "DMTCP_COORD_PORT": "7779", "DMTCP_CHECKPOINT_DIR": "/elsewhere"})
    assert env["GCONV_PATH"] == gconv_dir()
    assert env["DMTCP_GZIP"] == "0"
    assert "DMTCP_COORD_PORT" not in env and "DMTCP_CHECKPOINT_DIR" not in env
    assert program_env({"GCONV_PATH": "/custom"})["GCONV_PATH"] == "/custom"
    assert program_env({}, gzip=True)["DMTCP_GZIP"] == "1"
    assert gconv_dir("x86_64").endswith("gconv")
    assert gconv_dir("aarch64").endswith("gconv")


def test_only_the_restart_script_line_counts_as_a_complete_checkpoint():
    log = (
        "[2026-06-01T10:00:00.000, 100, 100, Note] at dmtcp_coordinator.cpp:1164 in startCheckpoint; "
        "REASON='starting checkpoint; incrementing generation; suspending all nodes\n"
        "[2026-06-01T10:00:01.000, 100, 100, Note] at dmtcp_coordinator.cpp:496 in releaseBarrier; "
        "REASON='Checkpoint complete; all workers running\n"
        "[2026-06-01T10:00:01.100, 100, 100, Note] at dmtcp_coordinator.cpp:559 in recordCkptFilename; "
        f"REASON='{COMPLETE_LINE}\n"
        "     restartScriptPath = /work/.spotrun/dmtcp/ckpt/dmtcp_restart_script_1a2b.sh\n"
    )
    assert count_completed(log) == 1
    assert count_completed(log + log) == 2
    assert count_completed("") == 0


def test_client_list_gives_real_pids_and_states():
    # as DMTCP 4.2.0 prints it (after a restart, one client is still at the restart barrier)
    output = ("Coordinator:\n  Host: localhost\n  Port: 42499\n"
              "Client List:\n#, PROG[virtPID:realPID]@HOST, DMTCP-UNIQUEPID, STATE, BARRIER\n"
              "1, python3.11[40000:81234]@ip-10-0-0-1, 98ff-40000-7f087229e2, WorkerState::RUNNING, \n"
              "2, sh[41000:81240]@ip-10-0-0-1, 98ff-41000-7f087229f1, WorkerState::RESTARTING, "
              "Socket::Restart_Ns_Register_Data\n")
    clients = parse_client_list(output)
    assert [(c.program, c.virtual_pid, c.real_pid, c.host, c.state) for c in clients] == [
        ("python3.11", 40000, 81234, "ip-10-0-0-1", "RUNNING"), ("sh", 41000, 81240, "ip-10-0-0-1", "RESTARTING")]
    assert parse_client_list("Client List:\n#, PROG[virtPID:realPID]@HOST, DMTCP-UNIQUEPID, STATE, BARRIER\n") == []


def test_version_parsing():
    assert parse_version("dmtcp_launch (DMTCP) 4.2.0\nLicense LGPLv3+") == "4.2.0"
    assert parse_version("no version here") is None


def test_image_problems(tmp_path):
    good = tmp_path / "ckpt_good.dmtcp"
    good.write_bytes(HEADER + b"memory")
    assert image_problem(good) is None
    gzipped = tmp_path / "ckpt_gz.dmtcp"
    gzipped.write_bytes(b"\x1f\x8b\x08\x00rest")
    assert image_problem(gzipped) is None
    empty = tmp_path / "ckpt_empty.dmtcp"
    empty.write_bytes(b"")
    assert image_problem(empty) == "is empty"
    garbage = tmp_path / "ckpt_garbage.dmtcp"
    garbage.write_bytes(b"\0" * 64)
    assert "header" in image_problem(garbage)
    Path(f"{good}.temp").write_bytes(b"more")
    assert "still being written" in image_problem(good)
    assert "cannot be read" in image_problem(tmp_path / "ckpt_missing.dmtcp")


class GrowingFile:
    """A fake sleep that appends to a file on its first `growths` calls (a compressor still writing)."""

    def __init__(self, path: Path, growths: int):
        self.path, self.growths, self.now, self.calls = path, growths, 0.0, 0

    def sleep(self, seconds: float) -> None:
        self.calls += 1
        self.now += seconds
        if self.calls <= self.growths:
            with self.path.open("ab") as handle:
                handle.write(b"x" * 100)

    def clock(self) -> float:
        return self.now


def test_images_are_taken_only_once_their_size_stays_put(tmp_path):
    image = tmp_path / "ckpt_a.dmtcp"
    image.write_bytes(HEADER)
    growing = GrowingFile(image, growths=3)
    sizes = wait_for_whole_images([image], deadline=10.0, settle_seconds=0.2, sleep=growing.sleep, clock=growing.clock)
    assert sizes == {image: len(HEADER) + 300}
    assert growing.calls == 4  # three growths seen, then one quiet interval

    still = GrowingFile(image, growths=1000)
    with pytest.raises(CheckpointError, match="still growing"):
        wait_for_whole_images([image], deadline=1.0, settle_seconds=0.2, sleep=still.sleep, clock=still.clock)
    with pytest.raises(CheckpointError, match="wrote no images"):
        wait_for_whole_images([], deadline=1.0)
    Path(f"{image}.temp").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"ckpt_a.dmtcp its .temp file is still being written"):
        wait_for_whole_images([image], deadline=0.0, settle_seconds=0.0)


def make_checkpoint_dir(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / "ckpt_python3_1a2b.dmtcp"
    image.write_bytes(HEADER + b"memory")
    (directory / "ckpt_python3_1a2b_files").mkdir()
    (directory / "ckpt_python3_1a2b_files" / "gconv-modules.cache").write_bytes(b"cache")
    (directory / "dmtcp_restart_script.sh").write_text("#!/bin/bash\n")
    return [image]


def test_images_and_their_files_are_moved_out_whole(tmp_path):
    images = make_checkpoint_dir(tmp_path / "ckpt")
    into = tmp_path / "into"
    into.mkdir()
    files = move_checkpoint(images, into)
    assert [p.relative_to(into).as_posix() for p in files] == [
        "ckpt_python3_1a2b.dmtcp", "ckpt_python3_1a2b_files/gconv-modules.cache"]
    assert not list((tmp_path / "ckpt").glob("ckpt_*"))  # the restart script stays: it is never uploaded
    assert checkpoint_files([into / "ckpt_python3_1a2b.dmtcp"]) == files


def test_restore_puts_images_back_at_the_checkpoint_path(tmp_path):
    downloaded = tmp_path / "incoming"
    make_checkpoint_dir(downloaded)
    ckpt = tmp_path / "work" / ".spotrun" / "dmtcp" / "ckpt"
    make_checkpoint_dir(ckpt)  # a stale one from an earlier attempt is replaced
    (ckpt / "ckpt_old_process.dmtcp").write_bytes(HEADER)

    images = stage_restore(downloaded, ckpt)

    assert images == [ckpt / "ckpt_python3_1a2b.dmtcp"]
    assert (ckpt / "ckpt_python3_1a2b_files" / "gconv-modules.cache").read_bytes() == b"cache"
    assert not (ckpt / "ckpt_old_process.dmtcp").exists()
    assert os.stat(images[0]).st_ino == os.stat(downloaded / "ckpt_python3_1a2b.dmtcp").st_ino  # linked, not copied


def test_restore_refuses_a_directory_without_whole_images(tmp_path):
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="no DMTCP images"):
        stage_restore(tmp_path / "incoming", tmp_path / "ckpt")
    (tmp_path / "incoming" / "ckpt_a.dmtcp").write_bytes(b"")
    with pytest.raises(CheckpointError, match="ckpt_a.dmtcp: it is empty"):
        stage_restore(tmp_path / "incoming", tmp_path / "ckpt")


def test_stale_images_are_cleared_before_a_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    make_checkpoint_dir(ckpt)
    Path(f"{ckpt}/ckpt_python3_1a2b.dmtcp.temp").write_bytes(b"half")
    clear_stale_images(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["dmtcp_restart_script.sh"]


# ------------------------------------------------- against the fake DMTCP


@pytest.fixture
def fake_dmtcp(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for tool in ("coordinator", "launch", "command", "restart"):
        wrapper = bin_dir / f"dmtcp_{tool}"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{PROGRAMS / "fake_dmtcp.py"}" {tool} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_DMTCP_STATE", str(tmp_path / "fake-state"))
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(bin_dir))
    return bin_dir


def fake_state(checkpointer: DmtcpCheckpointer) -> dict:
    return json.loads((Path(os.environ["FAKE_DMTCP_STATE"]) / f"{checkpointer.port}.json").read_text())


def plain_counter(steps: int, pause: float) -> list[str]:
    return [sys.executable, str(PROGRAMS / "plain_counter.py"), str(steps), str(pause)]


@pytest.mark.slow
def test_checkpoint_kill_and_restore_through_the_coordinator(fake_dmtcp, workdir, tmp_path):
    # Given a program launched under a private coordinator
    env = dict(os.environ)
    first = make_checkpointer("dmtcp", signal_name="SIGUSR1")
    first.start(plain_counter(40, 0.02), env, workdir, workdir / "attempt-1.log")
    assert first.port and first.port > 0
    wait_for(lambda: read_int(workdir / "progress.txt") >= 5, what="5 steps")

    # When a checkpoint is taken (dmtcp_command returns before the image exists)
    into = tmp_path / "outgoing"
    files = first.checkpoint(into, timeout=10)

    # Then it waited for the coordinator's line, and moved the whole image and its files out
    assert [p.relative_to(into).as_posix() for p in files] == [
        "ckpt_python3_1a2b-40000-5c6d.dmtcp", "ckpt_python3_1a2b-40000-5c6d_files/gconv-modules.cache"]
    assert image_problem(files[0]) is None
    assert not list(first.ckpt_dir.glob("ckpt_*"))
    assert count_completed(first.coordinator_log.read_text()) == 1
    saved_progress = json.loads(files[0].read_bytes()[len(HEADER):])["progress"]
    assert saved_progress >= 5
    assert [c.real_pid for c in first.clients()] == [first.pid]
    assert first.poll() is None

    # When the instance is reclaimed and another attempt restores the checkpoint
    os.killpg(first.pid, signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    second = make_checkpointer("dmtcp")
    second.start(plain_counter(40, 0.02), env, workdir, workdir / "attempt-2.log", restore_from=into)

    # Then dmtcp_restart ran in the work dir on the images staged back at the checkpoint path
    assert second.wait(30) == 0
    state = fake_state(second)
    assert state["cwd"] == str(workdir.resolve())
    restart_call = state["history"][-1]
    assert restart_call[:6] == ["restart", "-j", "-p", str(second.port), "--ckptdir", str(second.ckpt_dir)]
    assert restart_call[6:] == [str(second.ckpt_dir / "ckpt_python3_1a2b-40000-5c6d.dmtcp")]
    coordinator_call = state["history"][0]
    assert {"--daemon", "--exit-on-last", "--coord-logfile"} <= set(coordinator_call)
    # And the program finished with the same result as an uninterrupted run
    assert read_json(workdir / "result.json") == read_json(uninterrupted(plain_counter(40, 0.0), tmp_path) / "result.json")
    assert second.stop() == 0


def uninterrupted(command: list[str] | str, tmp_path: Path) -> Path:
    """Run the program to its end without DMTCP in a directory of its own; that directory."""
    reference = tmp_path / "reference"
    reference.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "COUNTER_START" and not k.startswith("SPOTRUN_")}
    subprocess.run(command, cwd=reference, check=True, env=env, shell=isinstance(command, str), timeout=300)
    return reference


def test_uncompressed_images_are_taken_without_waiting_for_them_to_settle(fake_dmtcp, workdir, tmp_path):
    # only a gzip compressor may still be writing after DMTCP reports the checkpoint (pitfall 7)
    runner = DmtcpCheckpointer(settle_seconds=30.0)
    runner.start(plain_counter(400, 0.02), dict(os.environ), workdir, workdir / "log")
    try:
        wait_for(lambda: read_int(workdir / "progress.txt") >= 2, what="2 steps")
        began = time.monotonic()
        assert runner.checkpoint(tmp_path / "into", timeout=20)
        assert time.monotonic() - began < 10
    finally:
        runner.stop(1)


def test_a_checkpoint_the_coordinator_never_completes_times_out(fake_dmtcp, workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DMTCP_NEVER_COMPLETE", "1")
    runner = DmtcpCheckpointer()
    runner.start(plain_counter(400, 0.02), dict(os.environ), workdir, workdir / "log")
    try:
        with pytest.raises(CheckpointError, match="timed out after 0.5s: the coordinator never reported"):
            runner.checkpoint(tmp_path / "into", timeout=0.5)
        assert runner.poll() is None
    finally:
        assert runner.stop(1) == -signal.SIGTERM


def test_a_refused_checkpoint_request_is_reported(fake_dmtcp, workdir, tmp_path, monkeypatch):
    runner = DmtcpCheckpointer()
    runner.start(plain_counter(400, 0.02), dict(os.environ), workdir, workdir / "log")
    monkeypatch.setenv("FAKE_DMTCP_COMMAND_FAILS", "1")
    try:
        with pytest.raises(CheckpointError, match="dmtcp_command -c failed with code 2: .*coordinator not running"):
            runner.checkpoint(tmp_path / "into", timeout=5)
    finally:
        runner.stop(1)


def test_the_dmtcp_version_is_recorded_in_the_facts(fake_dmtcp):
    assert find_tools().version() == "4.2.0"
    assert dmtcp.installed_version() == "4.2.0"
    assert environment_facts()["dmtcp"] == "4.2.0"


# ----------------------------------------------------------- real DMTCP
#
# Each real program runs under DMTCP, is checkpointed mid-run and goes on (its files change after the
# checkpoint); then its instance is lost (SIGKILL) and "another instance" restores it: the same
# absolute work path (as on every instance), holding none of the lost instance's files. Its result
# must equal an uninterrupted run's, without DMTCP.


@dataclass
class Restored:
    files: list[Path]  # the checkpoint
    clients: list[dmtcp.DmtcpClient]  # `dmtcp_command -l` just before it
    status: int | None  # the restored program's exit status

    def image_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.suffix == ".dmtcp")


def checkpoint_lose_and_restore(dmtcp_bin: Path, command: list[str] | str, workdir: Path, tmp_path: Path,
                                after_steps: int, timeout: float = 120.0, through: Any = None) -> Restored:
    """`through`: an S3 client; the checkpoint then goes the agent's way, its parts uploaded while DMTCP
    writes them (`parts.CheckpointUpload`), and comes back by parallel ranged GETs (`ranges.download_parts`)."""
    env = {k: v for k, v in os.environ.items() if k != "COUNTER_START" and not k.startswith("SPOTRUN_")}
    progress = workdir / "progress.txt"
    first = DmtcpCheckpointer(bin_dir=dmtcp_bin)
    first.start(command, env, workdir, workdir / ".spotrun" / "attempt-1.log")
    try:
        wait_for(lambda: read_int(progress) >= after_steps, timeout=timeout, what=f"{after_steps} steps")
        clients = first.clients()
        if through is None:
            files = first.checkpoint(tmp_path / "checkpoint", timeout=timeout)
        else:
            spy = UploadTimes(through)
            upload = CheckpointUpload(spy, BUCKET, "ck/files", part_size=5 * MIB)
            files = first.checkpoint(tmp_path / "captured", timeout=timeout, follow=upload.follow)
            captured_at = time.monotonic()
        assert files and all(image_problem(p) is None for p in files if p.suffix == ".dmtcp")
        at = read_int(progress)
        wait_for(lambda: read_int(progress) >= at + 2, timeout=timeout, what="progress after the checkpoint")
        if through is not None:
            upload_and_download(upload, spy, files, captured_at, through, tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.program.pgid, signal.SIGKILL)  # the instance is lost, with everything on it
        first.stop(grace_seconds=0)
    shutil.move(workdir, tmp_path / "lost-instance")
    workdir.mkdir()  # the next instance's work directory: what the agent stages, nothing else
    second = DmtcpCheckpointer(bin_dir=dmtcp_bin)
    second.start(command, env, workdir, workdir / ".spotrun" / "attempt-2.log", restore_from=tmp_path / "checkpoint")
    status = second.wait(timeout)
    second.stop(grace_seconds=1)
    assert status == 0, (workdir / ".spotrun" / "attempt-2.log").read_text(errors="replace")[-3000:]
    return Restored(files, clients, status)


def upload_and_download(upload: CheckpointUpload, spy: UploadTimes, files: list[Path], captured_at: float,
                        client: Any, tmp_path: Path) -> None:
    """Finish the upload that followed the capture, check it streamed, download it all into `checkpoint/`."""
    entries = upload.finish(files, tmp_path / "captured")
    images = [e for e in entries if e.name.endswith(".dmtcp")]
    # every image went while DMTCP wrote it, and some of its parts left before the capture ended
    assert images and all(e.streamed for e in images)
    assert any(at < captured_at for at in spy.part_times), "no part was sent while DMTCP was writing"
    for entry in entries:
        manifest = entry.to_manifest()
        download_parts(client, BUCKET, f"ck/files/{entry.name}", tmp_path / "checkpoint" / entry.name, entry.size,
                       manifest["parts"])


class UploadTimes:
    def __init__(self, client: Any):
        self.client, self.part_times = client, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def upload_part(self, **request: Any) -> Any:
        self.part_times.append(time.monotonic())
        return self.client.upload_part(**request)


@pytest.mark.slow
def test_real_dmtcp_restores_a_program_holding_its_state_in_memory(dmtcp_bin, workdir, tmp_path):
    restored = checkpoint_lose_and_restore(dmtcp_bin, plain_counter(60, 0.05), workdir, tmp_path, after_steps=10)
    result = read_json(workdir / "result.json")
    assert result == read_json(uninterrupted(plain_counter(60, 0.0), tmp_path) / "result.json")
    assert result["step"] == 60
    # the real `dmtcp_command -l`: one client, running, with its real PID
    assert [(c.state, c.real_pid > 0) for c in restored.clients] == [("RUNNING", True)]


@pytest.mark.slow
def test_real_dmtcp_restores_an_output_file_kept_open_and_appended_to(dmtcp_bin, workdir, tmp_path):
    command = [sys.executable, str(PROGRAMS / "appender.py"), "50", "0.05"]
    restored = checkpoint_lose_and_restore(dmtcp_bin, command, workdir, tmp_path, after_steps=10)
    # the open file travelled with the checkpoint (the new instance had none) and was appended to
    assert any(p.parent.name.endswith("_files") and p.name.startswith("out.txt_") for p in restored.files)
    assert (workdir / "out.txt").read_bytes() == (uninterrupted(command, tmp_path) / "out.txt").read_bytes()
    # the restored program's output goes to the new attempt's log, not the lost one's
    assert "step 49" in (workdir / ".spotrun" / "attempt-2.log").read_text()
    assert not (workdir / ".spotrun" / "attempt-1.log").exists()


@pytest.mark.slow
def test_real_dmtcp_restores_a_shell_pipeline_with_its_child_processes(dmtcp_bin, workdir, tmp_path):
    command = (f"{sys.executable} {PROGRAMS / 'squares.py'} 80 0.03 "
               "| awk '{ s = (s * 31 + $1) % 1000000007 } END { print s }' > sum.txt")
    restored = checkpoint_lose_and_restore(dmtcp_bin, command, workdir, tmp_path, after_steps=15)
    assert sorted(c.state for c in restored.clients) == ["RUNNING"] * 3  # sh, python, awk
    assert len([p for p in restored.files if p.suffix == ".dmtcp"]) == 3
    expected = (uninterrupted(command, tmp_path) / "sum.txt").read_text()
    assert (workdir / "sum.txt").read_text() == expected and expected.strip().isdigit()


@pytest.mark.slow
def test_real_dmtcp_restores_a_multithreaded_program(dmtcp_bin, workdir, tmp_path):
    command = [sys.executable, str(PROGRAMS / "threads.py"), "40", "0.05"]
    checkpoint_lose_and_restore(dmtcp_bin, command, workdir, tmp_path, after_steps=10)
    assert read_json(workdir / "result.json") == read_json(uninterrupted(command, tmp_path) / "result.json")


@pytest.mark.slow
def test_real_dmtcp_restores_hundreds_of_mib_of_numpy_arrays(dmtcp_bin, workdir, tmp_path, s3):  # noqa: F811
    # uploaded while DMTCP writes the image, downloaded by parallel ranges verified per part
    command = [sys.executable, str(PROGRAMS / "arrays.py"), "256", "12", "0.1"]
    restored = checkpoint_lose_and_restore(dmtcp_bin, command, workdir, tmp_path, after_steps=3, through=s3)
    assert restored.image_bytes() > 256 * 1024 * 1024  # the arrays are in the image
    assert read_json(workdir / "result.json") == read_json(uninterrupted(command, tmp_path) / "result.json")
