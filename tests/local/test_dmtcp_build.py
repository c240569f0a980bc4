"""Which DMTCP the tests and the local runtime use (spotrun_local.dmtcp_build): the pinned build of the
vendored source, found in the checkout's cache or made by the worker image's script."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from spotrun_local import dmtcp_build
from spotrun_local.dmtcp_build import PATCH, REPO, STAMP, DmtcpMissing, cache_prefix, find_bin
from spotrun_worker.checkpointers.dmtcp import TOOL_NAMES, find_tools


def fake_install(prefix: Path, patched: bool = True) -> Path:
    """A completed build in `prefix` (tools and the install script's stamp, with or without the gang
    patch's line, as install-dmtcp.sh writes it); its bin directory."""
    (prefix / "bin").mkdir(parents=True)
    for name in TOOL_NAMES:
        tool = prefix / "bin" / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    patch = f"DMTCP_PATCH={PATCH.name} sha256:{hashlib.sha256(PATCH.read_bytes()).hexdigest()}\n"
    (prefix / STAMP).write_text("DMTCP_VERSION=4.2.0\n" + (patch if patched else ""))
    return prefix / "bin"


def test_an_explicit_bin_directory_must_hold_dmtcp(tmp_path):
    assert find_bin({"SPOTRUN_DMTCP_BIN": str(fake_install(tmp_path / "mine"))}, cache=tmp_path) == tmp_path / "mine/bin"
    with pytest.raises(DmtcpMissing, match=rf"not found in {tmp_path} \(SPOTRUN_DMTCP_BIN\)"):
        find_bin({"SPOTRUN_DMTCP_BIN": str(tmp_path)}, cache=tmp_path)


def test_the_build_of_the_vendored_tarball_is_found_by_its_checksum(tmp_path):
    source = tmp_path / "dmtcp-4.2.0.tar.gz"
    source.write_bytes(b"not really a tarball")
    cache = tmp_path / "cache"
    fake_install(cache / "0123456789abcdef")  # a build of another tarball is not this one's
    env = {"DMTCP_TARBALL": str(source), "PATH": ""}
    with pytest.raises(DmtcpMissing, match="not built yet .*make dmtcp"):
        find_bin(env, cache=cache, allow_build=False)
    bin_dir = fake_install(cache_prefix(source, cache))
    assert len(cache_prefix(source, cache).name) == 16
    assert find_bin(env, cache=cache) == bin_dir


def test_a_failed_build_is_an_error_naming_why(tmp_path):
    source = tmp_path / "dmtcp-4.2.0.tar.gz"
    source.write_bytes(b"not the pinned tarball")
    with pytest.raises(DmtcpMissing, match=r"building DMTCP .* failed \(exit code 1\): .*expected 62dcb102"):
        find_bin({"DMTCP_TARBALL": str(source)}, cache=tmp_path / "cache")  # the real install script refuses it
    assert not (cache_prefix(source, tmp_path / "cache") / STAMP).exists()


def test_without_the_tarball_a_cached_build_then_path_are_used(tmp_path):
    env = {"DMTCP_TARBALL": str(tmp_path / "absent.tar.gz"), "PATH": ""}
    with pytest.raises(DmtcpMissing, match="absent, nothing is built in .* not on PATH"):
        find_bin(env, cache=tmp_path / "cache")
    on_path = fake_install(tmp_path / "usr")
    assert find_bin({**env, "PATH": str(on_path)}, cache=tmp_path / "cache") is None  # nothing to set
    cached = fake_install(tmp_path / "cache" / "fedcba9876543210")
    assert find_bin(env, cache=tmp_path / "cache") == cached


def test_a_cached_build_without_the_gang_patch_is_never_used(tmp_path):
    """The key covers the patch: the same tarball with another patch (or none) is another build; and
    without the tarball a cached build whose stamp lacks this patch (an older, stock build) is passed over."""
    source = tmp_path / "dmtcp-4.2.0.tar.gz"
    source.write_bytes(b"not really a tarball")
    other_patch = tmp_path / "other.patch"
    other_patch.write_bytes(PATCH.read_bytes() + b"\n")
    assert cache_prefix(source, tmp_path) != cache_prefix(source, tmp_path, patch=other_patch)
    unkeyed = hashlib.sha256(source.read_bytes()).hexdigest()[:16]  # the key before the patch was shipped
    assert cache_prefix(source, tmp_path).name != unkeyed
    env = {"DMTCP_TARBALL": str(tmp_path / "absent.tar.gz"), "PATH": ""}
    fake_install(tmp_path / "cache" / unkeyed, patched=False)
    with pytest.raises(DmtcpMissing, match="nothing is built in"):
        find_bin(env, cache=tmp_path / "cache")


def test_the_makefile_and_the_runtime_agree_on_the_cache_key():
    if not dmtcp_build.tarball().is_file():
        pytest.skip("the vendored DMTCP source is absent")
    printed = subprocess.run(["make", "-pnq", "help"], cwd=REPO, capture_output=True, text=True, check=False).stdout
    line = next(line for line in printed.splitlines() if line.startswith("DMTCP_PREFIX :="))
    assert line.split(":=", 1)[1].strip() == str(cache_prefix(dmtcp_build.tarball()))


def test_here_it_is_make_dmtcps_build(dmtcp_bin):
    # the session's DMTCP, the one the runtime hands its agents: the pinned version, from the cache
    if os.environ.get("SPOTRUN_DMTCP_BIN") is None:
        assert dmtcp_bin == cache_prefix(dmtcp_build.tarball()) / "bin"
    assert find_tools(dmtcp_bin).version() == "4.2.0"
