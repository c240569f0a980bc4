"""The DMTCP that the tests and the local runtime use: the pinned 4.2.0, built once from the vendored source.

`make dmtcp` (a prerequisite of `make test` and `make run`) builds `../shared/vendor/dmtcp-4.2.0.tar.gz`
with `worker/image/install-dmtcp.sh` (the script the worker image uses) into
`.cache/dmtcp/<first 16 hex digits of the sha256 of the tarball's bytes followed by the gang patch's>/`
(worker/image/dmtcp-gang.patch: a build without the patch, or with another one, is never used), and exports SPOTRUN_DMTCP_BIN. Started
any other way (`python -m spotrun_local`, pytest by hand, the benchmarks), the same build is found
here, or made (once, under a lock, about a minute), so `checkpoint.method: dmtcp`, the default,
works locally out of the box. Order:

1. SPOTRUN_DMTCP_BIN, when set, must hold the four DMTCP tools (a wrong setting is an error, not a
   reason to look elsewhere);
2. with the tarball present: its cache directory, built if missing;
3. without it: the newest complete build in the cache, else DMTCP on PATH, else none
   (`DmtcpMissing` names what is absent).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from spotrun_worker.checkpointers.base import CheckpointerUnavailable
from spotrun_worker.checkpointers.dmtcp import BIN_ENV, TOOL_NAMES, find_tools

log = logging.getLogger("spotrun.local.dmtcp")
REPO = Path(__file__).resolve().parents[2]
TARBALL = REPO.parent / "shared" / "vendor" / "dmtcp-4.2.0.tar.gz"  # the Makefile's DMTCP_TARBALL default
CACHE = REPO / ".cache" / "dmtcp"
INSTALL_SCRIPT = REPO / "worker" / "image" / "install-dmtcp.sh"
PATCH = REPO / "worker" / "image" / "dmtcp-gang.patch"  # applied by install-dmtcp.sh; part of the cache key
STAMP = ".spotrun-dmtcp"  # written by install-dmtcp.sh once the build is installed and verified


class DmtcpMissing(RuntimeError):
    """No usable DMTCP, and none can be built here."""


def tarball(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("DMTCP_TARBALL") or TARBALL)


def cache_prefix(source: Path, cache: Path = CACHE, patch: Path = PATCH) -> Path:
    """Where `make dmtcp` installs the build of `source` with `patch` (keyed, as in the Makefile, by the
    checksum of the tarball's bytes followed by the patch's: a change to either is a new build)."""
    digest = hashlib.sha256()
    for part in (source, patch):
        with part.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return cache / digest.hexdigest()[:16]


def patched_stamp(stamp: Path, patch: Path = PATCH) -> bool:
    """Whether an install's stamp says it was built with this very patch (older caches were not)."""
    wanted = f"DMTCP_PATCH={patch.name} sha256:{hashlib.sha256(patch.read_bytes()).hexdigest()}"
    return wanted in stamp.read_text().splitlines()


def build(source: Path, prefix: Path) -> None:
    """Build `source` into `prefix` with the worker image's script, once even when several processes ask."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f"{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / STAMP).is_file():
            return  # built by whoever held the lock before us
        shutil.rmtree(prefix, ignore_errors=True)  # a build that died half way
        log.warning("building DMTCP from %s into %s (once; about a minute)", source, prefix)
        done = subprocess.run([str(INSTALL_SCRIPT), "--prefix", str(prefix), "--tarball", str(source)],  # noqa: S603
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (prefix / STAMP).is_file():
            raise DmtcpMissing(f"building DMTCP from {source} failed (exit code {done.returncode}): "
                               f"{done.stderr.strip()[-1500:]}")


def find_bin(env: Mapping[str, str] = os.environ, cache: Path = CACHE, allow_build: bool = True) -> Path | None:
    """The bin directory of the DMTCP to use; None when DMTCP is on PATH (nothing to set).

    DmtcpMissing when there is none: SPOTRUN_DMTCP_BIN is wrong, the build failed, or neither the
    vendored tarball, a cached build nor PATH has DMTCP."""
    chosen = env.get(BIN_ENV)
    if chosen:
        try:
            find_tools(chosen)
        except CheckpointerUnavailable as missing:
            raise DmtcpMissing(str(missing)) from None
        return Path(chosen)
    source = tarball(env)
    if source.is_file():
        prefix = cache_prefix(source, cache)
        if not (prefix / STAMP).is_file():
            if not allow_build:
                raise DmtcpMissing(f"DMTCP is not built yet from {source}: run `make dmtcp`")
            build(source, prefix)
        return prefix / "bin"
    built = sorted((p.parent for p in cache.glob(f"*/{STAMP}") if patched_stamp(p)),
                   key=lambda p: (p / STAMP).stat().st_mtime)
    if built:
        return built[-1] / "bin"
    if all(shutil.which(tool, path=env.get("PATH")) for tool in TOOL_NAMES):
        return None
    raise DmtcpMissing(f"no DMTCP: {BIN_ENV} is not set, the vendored source {source} is absent, nothing is "
                       f"built in {cache} and dmtcp_launch is not on PATH")
