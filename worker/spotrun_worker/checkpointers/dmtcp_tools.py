"""The DMTCP programs spotrun drives, found and checked against the pinned version (worker/image/dmtcp.pin)."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .base import CheckpointerUnavailable

BIN_ENV = "SPOTRUN_DMTCP_BIN"
TOOL_NAMES = ("dmtcp_coordinator", "dmtcp_launch", "dmtcp_command", "dmtcp_restart")
PIN_FILE = Path(__file__).resolve().parents[2] / "image" / "dmtcp.pin"
_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?)\b")


@dataclass(frozen=True)
class DmtcpTools:
    coordinator: Path
    launch: Path
    command: Path
    restart: Path

    def version(self) -> str | None:
        return _tool_version(str(self.launch))


def pinned_version() -> str:
    """The DMTCP version spotrun builds, tests and ships (worker/image/dmtcp.pin, in the agent's bundle)."""
    return _pin()["DMTCP_VERSION"]


@functools.cache
def _pin() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in PIN_FILE.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def what_to_do() -> str:
    return f"install DMTCP {pinned_version()} or choose checkpoint.method: signal|none"


def find_tools(bin_dir: str | Path | None = None, search_path: str | None = None) -> DmtcpTools:
    """The DMTCP programs: from `bin_dir` (else $SPOTRUN_DMTCP_BIN) when given, else from PATH."""
    chosen = bin_dir if bin_dir is not None else os.environ.get(BIN_ENV) or None
    found: dict[str, Path] = {}
    for name in TOOL_NAMES:
        if chosen is not None:
            candidate = Path(chosen) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
        else:
            located = shutil.which(name, path=search_path)
            if located:
                found[name] = Path(located)
    missing = [name for name in TOOL_NAMES if name not in found]
    if missing:
        where = f"in {chosen} ({BIN_ENV})" if chosen is not None else "on PATH"
        names = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        raise CheckpointerUnavailable(f"dmtcp: {names} not found {where}; {what_to_do()}")
    return DmtcpTools(found["dmtcp_coordinator"], found["dmtcp_launch"], found["dmtcp_command"], found["dmtcp_restart"])


def verified_tools(bin_dir: str | Path | None = None, expected: str | None = None) -> DmtcpTools:
    """The DMTCP programs, checked to be the pinned version (`dmtcp_launch --version`).

    A checkpoint image is only restored by the DMTCP that wrote it, so another version is as good
    as none: CheckpointerUnavailable, saying which version was found and which one is needed.
    """
    tools = find_tools(bin_dir)
    expected = expected or pinned_version()
    found = tools.version()
    if found != expected:
        said = f"says {found}" if found else "gave no version"
        raise CheckpointerUnavailable(f"dmtcp: {tools.launch} --version {said}, expected {expected}; {what_to_do()}")
    return tools


def parse_version(text: str) -> str | None:
    match = _VERSION.search(text)
    return match.group(1) if match else None


@functools.cache
def _tool_version(launch: str) -> str | None:
    try:
        done = subprocess.run([launch, "--version"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(done.stdout + done.stderr)


def installed_version() -> str | None:
    """The DMTCP version on this machine, or None when DMTCP is not installed."""
    try:
        return find_tools().version()
    except CheckpointerUnavailable:
        return None


def gconv_dir(machine: str | None = None) -> str:
    """Where glibc's gconv modules live; setting GCONV_PATH to it keeps the shared cache out of images."""
    machine = machine or platform.machine()
    triplet = {"x86_64": "x86_64-linux-gnu", "amd64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
               "arm64": "aarch64-linux-gnu"}.get(machine, f"{machine}-linux-gnu")
    candidates = [f"/usr/lib/{triplet}/gconv", "/usr/lib64/gconv", "/usr/lib/gconv"]
    return next((c for c in candidates if os.path.isdir(c)), candidates[0])


STAMP_NAME = ".spotrun-dmtcp"  # install-dmtcp.sh's record of what it built, in the prefix above bin/


def gang_patch_problem(tools: DmtcpTools) -> str | None:
    """Why this DMTCP cannot checkpoint a gang, or None: only a build with spotrun's gang patch can (stock
    4.2.0 hangs draining sockets between nodes and restores no connection across them, docs/gangs.md).
    install-dmtcp.sh records the patch it applied in the prefix's stamp; a DMTCP without that record
    (built some other way, a user's own image) is not trusted with a gang."""
    wanted = f"DMTCP_PATCH={_pin()['DMTCP_PATCH']} sha256:{_pin()['DMTCP_PATCH_SHA256']}"
    stamp = tools.launch.resolve().parent.parent / STAMP_NAME
    try:
        recorded = stamp.read_text().splitlines()
    except OSError:
        recorded = []
    if wanted in recorded:
        return None
    return (f"dmtcp: checkpointing a gang needs DMTCP {pinned_version()} built with spotrun's gang patch "
            f"(worker/image/install-dmtcp.sh records it in {stamp}: {wanted}); this one is not. Build the "
            f"worker image with worker/image/build-worker-image.sh, or choose checkpoint.method: signal|none")
