"""What a checkpoint depends on, recorded in its manifest, and whether a machine can restore it.

A DMTCP image is the process's memory: it restores only on the same architecture, with every CPU
feature the program may have chosen at start-up (glibc and numeric libraries pick code paths by CPU
flags once), and with the same DMTCP version (the image format changes between releases). Kernel,
glibc and Python are recorded for diagnosis but do not decide. A `signal` checkpoint is the
program's own file format, and `none` has nothing to restore: both are always compatible.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

from .dmtcp import installed_version

CPUINFO = Path("/proc/cpuinfo")
_FLAG_KEYS = ("flags", "features")  # x86 "flags", arm64 "Features"


def cpu_flags(cpuinfo_text: str) -> list[str]:
    """The CPU features every processor has (the intersection), sorted."""
    common: set[str] | None = None
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or key.strip().lower() not in _FLAG_KEYS:
            continue
        flags = set(value.split())
        common = flags if common is None else common & flags
    return sorted(common or ())


def flags_digest(flags: list[str]) -> str:
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()


def _cpu_model(cpuinfo_text: str) -> str | None:
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "cpu model"):
            return value.strip()
    return None


def _glibc_version() -> str | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):
        text = ""
    if text:
        return text.split()[-1]
    name, version = platform.libc_ver()
    return version or None


def environment_facts(cpuinfo_text: str | None = None) -> dict[str, Any]:
    """This machine's facts, as recorded in a checkpoint manifest."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = CPUINFO.read_text()
        except OSError:
            cpuinfo_text = ""
    flags = cpu_flags(cpuinfo_text)
    return {
        "arch": platform.machine(),
        "kernel": platform.release(),
        "cpu_model": _cpu_model(cpuinfo_text),
        "cpu_flags": flags,
        "cpu_flags_sha256": flags_digest(flags),
        "glibc": _glibc_version(),
        "python": platform.python_version(),
        "dmtcp": installed_version(),
    }


def compatible(manifest_facts: dict[str, Any], here_facts: dict[str, Any], method: str) -> tuple[bool, str]:
    """Whether a checkpoint taken where `manifest_facts` were recorded can be restored here, and why."""
    if method == "none":
        return True, "method 'none' restores nothing"
    if method == "signal":
        return True, "method 'signal' checkpoints are the program's own files"
    if method != "dmtcp":
        return False, f"unknown checkpoint method {method!r}"

    then_arch, here_arch = manifest_facts.get("arch"), here_facts.get("arch")
    if not then_arch:
        return False, "the manifest records no architecture"
    if then_arch != here_arch:
        return False, f"architecture differs: checkpoint {then_arch}, here {here_arch}"

    then_flags, here_flags = manifest_facts.get("cpu_flags"), here_facts.get("cpu_flags")
    if then_flags is not None and here_flags is not None:
        missing = sorted(set(then_flags) - set(here_flags))
        if missing:
            shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
            return False, f"this CPU lacks flags the checkpoint's CPU had: {shown}"
    elif manifest_facts.get("cpu_flags_sha256") is None:
        return False, "the manifest records no CPU flags"
    elif manifest_facts.get("cpu_flags_sha256") != here_facts.get("cpu_flags_sha256"):
        return False, "CPU flags differ (only their digest was recorded)"

    then_dmtcp, here_dmtcp = manifest_facts.get("dmtcp"), here_facts.get("dmtcp")
    if not then_dmtcp:
        return False, "the manifest records no DMTCP version"
    if not here_dmtcp:
        return False, f"DMTCP is not installed here (checkpoint needs {then_dmtcp})"
    if then_dmtcp != here_dmtcp:
        return False, f"DMTCP version differs: checkpoint {then_dmtcp}, here {here_dmtcp}"
    return True, f"same architecture ({here_arch}), CPU flags a superset, DMTCP {here_dmtcp}"
