"""The `dmtcp` checkpointer: transparent checkpoints of any program with DMTCP 4.2.0.

Each task gets a private coordinator on a free port (`dmtcp_coordinator --daemon --exit-on-last -p 0
--port-file F --coord-logfile LOG`), started separately from the program so that its log is at a
known path: that log is how a checkpoint is known to be complete, because `dmtcp_command -bc` does
not block (notes/dmtcp.md, pitfall 1). The agent drives every checkpoint with `dmtcp_command -c`,
counts the coordinator's `Checkpoint complete. Wrote restart script` lines (falling back to the
restart script's modification time), checks each image is whole (a DMTCP or gzip header, no
`.temp` twin, a size that stays put) and moves the images and their `*_files/` directories out.

Paths: everything lives under `<work dir>/.spotrun/dmtcp/`. The work directory is restored at the
same absolute path on every instance (pitfall 4), and a restore puts the images back into the same
checkpoint directory before `dmtcp_restart` runs in the work directory (pitfall 5), so the copies
DMTCP keeps in `*_files/` are found where it recorded them (pitfall 3). GCONV_PATH is set as well,
so that glibc's gconv cache is not part of the image at all.

Files the program holds open go into the checkpoint too (`--ckpt-open-files`): a restore happens on
another instance, whose work directory holds only the staged inputs, so an output the program keeps
open and appends to would otherwise come back as NUL bytes (pitfall 4). DMTCP copies each open file
the user owns into `*_files/` and recreates it at restart where it is missing; one that exists with
other contents stops the restart (DMTCP never overwrites it). The program's stdout and stderr (the
attempt's log) are not among them: a restored program writes to `dmtcp_restart`'s, the new log.

Images are written uncompressed (`--no-gzip`, `DMTCP_GZIP=0`): gzip costs ten times the checkpoint
time for about 15% less data. The restart script is never used (it hard-codes host, port and paths).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import CheckpointError, Command, Program, describe_status, shell_argv
from .dmtcp_tools import (  # noqa: F401 - re-exported: the tools used to live here
    BIN_ENV,
    PIN_FILE,
    TOOL_NAMES,
    DmtcpTools,
    find_tools,
    gconv_dir,
    installed_version,
    parse_version,
    pinned_version,
    verified_tools,
    what_to_do,
)

COMPLETE_LINE = "Checkpoint complete. Wrote restart script"
IMAGE_GLOB = "ckpt_*.dmtcp"
RESTART_SCRIPT_GLOB = "dmtcp_restart_script*.sh"
IMAGE_HEADER = b"DMTCP_CHECKPOINT_IMAGE_v"
GZIP_HEADER = b"\x1f\x8b"
DMTCP_SUBDIR = Path(".spotrun") / "dmtcp"
COMMAND_TIMEOUT_SECONDS = 30.0

_CLIENT_LINE = re.compile(
    r"^\s*(?P<number>\d+),\s*(?P<program>.*?)\[(?P<virtual_pid>\d+):(?P<real_pid>\d+)\]@(?P<host>[^,]*),"
    r"\s*(?P<unique_pid>[^,]*),\s*(?P<state>[^,]*)"
)


# ----------------------------------------------------------- command lines


def coordinator_argv(tools: DmtcpTools, port_file: Path, log_file: Path, ckpt_dir: Path, port: int = 0) -> list[str]:
    return [str(tools.coordinator), "--daemon", "--exit-on-last", "-p", str(port), "--port-file", str(port_file),
            "--coord-logfile", str(log_file), "--ckptdir", str(ckpt_dir)]


def _host(host: str | None) -> list[str]:
    """`-h HOST` for a coordinator on another node (a gang's rank 0); none for this node's own."""
    return ["-h", host] if host else []


def launch_argv(tools: DmtcpTools, port: int, ckpt_dir: Path, program: list[str], gzip: bool = False,
                host: str | None = None) -> list[str]:
    # --ckpt-open-files is inherited by every process of the computation and survives restarts (DMTCP
    # keeps it in the program's environment, DMTCP_CKPT_OPEN_FILES).
    return [str(tools.launch), "-j", *_host(host), "-p", str(port), "--ckptdir", str(ckpt_dir),
            *([] if gzip else ["--no-gzip"]), "--ckpt-open-files", *program]


def restart_argv(tools: DmtcpTools, port: int, ckpt_dir: Path, images: list[Path], host: str | None = None) -> list[str]:
    if not images:
        raise ValueError("no checkpoint images to restart from")
    return [str(tools.restart), "-j", *_host(host), "-p", str(port), "--ckptdir", str(ckpt_dir), *map(str, images)]


def command_argv(tools: DmtcpTools, port: int, *flags: str, host: str | None = None) -> list[str]:
    return [str(tools.command), *_host(host), "-p", str(port), *flags]


def program_env(env: dict[str, str], gzip: bool = False) -> dict[str, str]:
    prepared = dict(env)
    prepared.setdefault("GCONV_PATH", gconv_dir())
    prepared["DMTCP_GZIP"] = "1" if gzip else "0"
    for name in ("DMTCP_COORD_PORT", "DMTCP_PORT", "DMTCP_CHECKPOINT_DIR", "DMTCP_CHECKPOINT_INTERVAL"):
        prepared.pop(name, None)  # the command lines say these; an inherited value must not override them
    return prepared


# ------------------------------------------------- completion and images


def count_completed(log_text: str) -> int:
    """How many checkpoints the coordinator log reports complete (one line per checkpoint).

    "Checkpoint complete; all workers running" is a different line, printed earlier in the same
    checkpoint: only the restart-script line counts.
    """
    return sum(1 for line in log_text.splitlines() if COMPLETE_LINE in line)


def restart_script_mtime(ckpt_dir: Path) -> int:
    """Newest modification time (ns) of the restart script(s) or their symlink; 0 when none."""
    newest = 0
    for script in ckpt_dir.glob(RESTART_SCRIPT_GLOB):
        for stat in (script.lstat, script.stat):
            with contextlib.suppress(OSError):
                newest = max(newest, stat().st_mtime_ns)
    return newest


@dataclass(frozen=True)
class DmtcpClient:
    number: int
    program: str
    virtual_pid: int
    real_pid: int
    host: str
    state: str  # RUNNING, SUSPENDED, CHECKPOINTING, RESTARTING, ... (DMTCP prints WorkerState::RUNNING)


def parse_client_list(output: str) -> list[DmtcpClient]:
    """`dmtcp_command -l` output -> its clients, with the real PIDs (pitfall 6).

    DMTCP 4.2.0 prints `1, python3.11[40000:29281]@vm, 98ff-40000-7f087229e2, WorkerState::RUNNING, `;
    the state is given without its `WorkerState::` prefix."""
    clients = []
    for line in output.splitlines():
        match = _CLIENT_LINE.match(line)
        if match:
            state = match["state"].strip().removeprefix("WorkerState::")
            clients.append(DmtcpClient(int(match["number"]), match["program"].strip(), int(match["virtual_pid"]),
                                       int(match["real_pid"]), match["host"].strip(), state))
    return clients


def image_problem(image: Path) -> str | None:
    """Why an image is not (yet) whole, or None."""
    if Path(f"{image}.temp").exists():
        return "its .temp file is still being written"
    try:
        size = image.stat().st_size
        with image.open("rb") as handle:
            head = handle.read(len(IMAGE_HEADER))
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if size == 0:
        return "is empty"
    if not (head.startswith(IMAGE_HEADER) or head.startswith(GZIP_HEADER)):
        return "does not start with a DMTCP or gzip header"
    return None


def wait_for_whole_images(images: list[Path], deadline: float, settle_seconds: float = 0.2,
                          sleep=time.sleep, clock=time.monotonic) -> dict[Path, int]:
    """Block until every image is whole and its size stayed the same over `settle_seconds`
    (a gzip compressor may still be writing: pitfall 7); their sizes. CheckpointError at the deadline."""
    if not images:
        raise CheckpointError("DMTCP reported a complete checkpoint but wrote no images")
    previous: dict[Path, int] | None = None
    while True:
        problems = {image.name: image_problem(image) for image in images}
        problems = {name: why for name, why in problems.items() if why}
        sizes = {} if problems else {image: image.stat().st_size for image in images}
        if not problems and previous == sizes:
            return sizes
        if clock() >= deadline:
            if problems:
                detail = "; ".join(f"{name} {why}" for name, why in sorted(problems.items()))
            else:
                detail = "images were still growing"
            raise CheckpointError(f"checkpoint images not whole before the timeout: {detail}")
        previous = sizes or None
        sleep(settle_seconds)


def checkpoint_files(images: list[Path]) -> list[Path]:
    """The images and, for each, its `<image stem>_files/` directory's files."""
    files: list[Path] = []
    for image in sorted(images):
        files.append(image)
        extra = image.with_name(image.name.removesuffix(".dmtcp") + "_files")
        if extra.is_dir():
            files.extend(sorted(p for p in extra.rglob("*") if p.is_file()))
    return files


def move_checkpoint(images: list[Path], into: Path) -> list[Path]:
    """Move the images and their `_files` directories into `into` (renames when on one filesystem)."""
    moved: list[Path] = []
    for image in sorted(images):
        extra = image.with_name(image.name.removesuffix(".dmtcp") + "_files")
        target = into / image.name
        shutil.move(str(image), str(target))
        moved.append(target)
        if extra.is_dir():
            shutil.move(str(extra), str(into / extra.name))
    return checkpoint_files(moved)


def stage_restore(restore_from: Path, ckpt_dir: Path) -> list[Path]:
    """Put a downloaded checkpoint back into the checkpoint directory (hard links where possible,
    so gigabytes are not copied); the images to restart from."""
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_dir.mkdir(parents=True)
    for source in sorted(restore_from.rglob("*")):
        if not source.is_file():
            continue
        target = ckpt_dir / source.relative_to(restore_from)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    images = sorted(ckpt_dir.glob(IMAGE_GLOB))
    if not images:
        raise CheckpointError(f"nothing to restore: {restore_from} holds no DMTCP images ({IMAGE_GLOB})")
    for image in images:
        problem = image_problem(image)
        if problem:
            raise CheckpointError(f"cannot restore from {image.name}: it {problem}")
    return images


def clear_stale_images(ckpt_dir: Path) -> None:
    """Remove images left by an earlier checkpoint (already uploaded) or a failed one."""
    for stale in [*ckpt_dir.glob(IMAGE_GLOB), *ckpt_dir.glob(IMAGE_GLOB + ".temp"), *ckpt_dir.glob("ckpt_*_files")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


# -------------------------------------------------------------- checkpointer


class DmtcpCheckpointer:
    method = "dmtcp"
    supports_checkpoint = True
    # checkpoint() names each image as DMTCP starts writing it (`follow`), so its parts can be uploaded
    # while the rest is written: DMTCP writes an image strictly sequentially (it may be a pipe to gzip).
    streams_capture = True

    def __init__(self, bin_dir: str | Path | None = None, gzip: bool = False, startup_timeout: float = 30.0,
                 settle_seconds: float = 0.2, poll_seconds: float = 0.1):
        # CheckpointerUnavailable when DMTCP is not installed, or not the pinned version.
        self.tools = verified_tools(bin_dir)
        self.gzip = gzip
        self.startup_timeout = startup_timeout
        self.settle_seconds = settle_seconds
        self.poll_seconds = poll_seconds
        self.program: Program | None = None
        self.port: int | None = None
        # Where the coordinator is: this node's own, on a free port (a gang's rank 0 overrides both).
        self.coordinator_host: str | None = None
        self.coordinator_port = 0

    # ---------------------------------------------------------------- life

    def start(self, command: Command, env: dict[str, str], cwd: Path, log_path: Path,
              restore_from: Path | None = None) -> None:
        if self.program is not None:
            raise RuntimeError("the program was already started")
        base = cwd.resolve() / DMTCP_SUBDIR
        self.ckpt_dir = base / "ckpt"
        self.coordinator_log = base / "coordinator.log"
        self.port_file = base / "coordinator.port"
        prepared = program_env(env, self.gzip)
        if restore_from is not None:
            images = stage_restore(restore_from, self.ckpt_dir)
        else:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            self.ckpt_dir.mkdir(parents=True)
        self.port = self._start_coordinator(prepared, base)
        if restore_from is not None:
            argv = restart_argv(self.tools, self.port, self.ckpt_dir, images, self.coordinator_host)
        else:
            argv = launch_argv(self.tools, self.port, self.ckpt_dir, shell_argv(command), self.gzip,
                               self.coordinator_host)
        # dmtcp_launch execs the program, and dmtcp_restart becomes the restored process, so the
        # child is the program and leads its own process group either way.
        self.program = Program(argv, prepared, cwd, log_path)

    def _start_coordinator(self, env: dict[str, str], base: Path) -> int:
        base.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        output = base / "coordinator.out"
        with output.open("ab") as out:
            # --daemon: the command returns once the coordinator detached; its output goes to a file,
            # never a pipe, so a detached coordinator holding it open cannot block us.
            daemon = subprocess.Popen(  # noqa: S603
                coordinator_argv(self.tools, self.port_file, self.coordinator_log, self.ckpt_dir, self.coordinator_port),
                cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                # No inherited descriptor beyond 0-2, ever: DMTCP takes any such fd for a socket, and two
                # processes holding one hang at restart (docs/gangs.md, cause 1). Popen's default, said.
                start_new_session=True, close_fds=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                port = int(self.port_file.read_text().strip())
                if port > 0:
                    return port
            status = daemon.poll()
            if status not in (None, 0):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            daemon.kill()
        tail = output.read_text(errors="replace")[-1000:] if output.exists() else ""
        raise CheckpointError(f"the DMTCP coordinator did not start (no port in {self.port_file}): {tail.strip()}")

    def poll(self) -> int | None:
        return self.program.poll() if self.program else None

    def wait(self, timeout: float | None = None) -> int | None:
        return self.program.wait(timeout) if self.program else None

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        if self.program is None:
            return None
        status = self.program.stop(grace_seconds)
        self._quit_coordinator()
        return status

    def _quit_coordinator(self) -> None:
        """--exit-on-last ends the coordinator with the program; this covers a coordinator left alone."""
        if self.port is None:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(command_argv(self.tools, self.port, "-q", host=self.coordinator_host),  # noqa: S603
                           capture_output=True, timeout=5, check=False)

    @property
    def pid(self) -> int | None:
        return self.program.pid if self.program else None

    def clients(self) -> list[DmtcpClient]:
        """The processes under this coordinator, with their real PIDs (`dmtcp_command -l`)."""
        if self.port is None:
            return []
        done = self._command("-l")
        return parse_client_list(done.stdout + done.stderr)

    def _command(self, *flags: str) -> subprocess.CompletedProcess[str]:
        assert self.port is not None
        return subprocess.run(command_argv(self.tools, self.port, *flags, host=self.coordinator_host),  # noqa: S603
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False)

    # ---------------------------------------------------------- checkpoint

    def checkpoint(self, into: Path, timeout: float,
                   follow: Callable[[Path, str], None] | None = None) -> list[Path]:
        """Capture into `into`; `follow(path, final name)` is called for each image as DMTCP starts
        writing it (`<image>.temp`, renamed once whole; the name is relative to `into`)."""
        if self.program is None or self.port is None:
            raise CheckpointError("the program was not started")
        status = self.program.poll()
        if status is not None:
            raise CheckpointError(f"cannot checkpoint: the program already {describe_status(status)}")
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise CheckpointError(f"checkpoint target {into} is not empty")
        deadline = time.monotonic() + timeout
        clear_stale_images(self.ckpt_dir)
        log_offset = self.coordinator_log.stat().st_size if self.coordinator_log.exists() else 0
        script_before = restart_script_mtime(self.ckpt_dir)
        try:
            done = self._command("-c")
        except subprocess.TimeoutExpired:
            raise CheckpointError("dmtcp_command -c did not answer") from None
        if done.returncode != 0:
            raise CheckpointError(f"dmtcp_command -c failed with code {done.returncode}: "
                                  f"{(done.stdout + done.stderr).strip()[-500:]}")
        followed: set[Path] = set()
        while not self._completed_since(log_offset, script_before):
            if follow is not None and not self.gzip:  # a gzip child writes on after the checkpoint
                for temp in sorted(self.ckpt_dir.glob(IMAGE_GLOB + ".temp")):
                    if temp not in followed:
                        followed.add(temp)
                        follow(temp, temp.name.removesuffix(".temp"))
            status = self.program.poll()
            if status is not None:
                raise CheckpointError(f"the program {describe_status(status)} during the checkpoint")
            if time.monotonic() >= deadline:
                raise CheckpointError(f"checkpoint timed out after {timeout:g}s: the coordinator never "
                                      f"reported '{COMPLETE_LINE}' (log: {self.coordinator_log})")
            time.sleep(self.poll_seconds)
        images = sorted(self.ckpt_dir.glob(IMAGE_GLOB))
        # Uncompressed, DMTCP renames an image from its .temp name once written, before it reports the
        # checkpoint: no size to watch settle. The program runs again meanwhile, and whatever it does
        # before the agent freezes it after a final checkpoint is done again after the restore.
        wait_for_whole_images(images, deadline, self.settle_seconds if self.gzip else 0.0)
        return move_checkpoint(images, into)

    def _completed_since(self, log_offset: int, script_before: int) -> bool:
        with contextlib.suppress(OSError), self.coordinator_log.open("rb") as log:
            log.seek(log_offset)
            if count_completed(log.read().decode(errors="replace")) > 0:
                return True
        return restart_script_mtime(self.ckpt_dir) > script_before
