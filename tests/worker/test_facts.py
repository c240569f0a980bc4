"""Environment facts recorded in manifests, and which machines may restore which checkpoints."""

from __future__ import annotations

import platform
import re

import pytest

from spotrun_worker.checkpointers import compatible, environment_facts
from spotrun_worker.checkpointers.facts import cpu_flags, flags_digest

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2
"""


def test_cpu_flags_are_those_every_processor_has():
    assert cpu_flags(CPUINFO) == ["avx", "avx2", "fpu", "sse2"]
    assert cpu_flags("processor : 0\nFeatures : fp asimd sve\n") == ["asimd", "fp", "sve"]  # arm64
    assert cpu_flags("") == []


def test_environment_facts_describe_this_machine():
    facts = environment_facts(CPUINFO)
    assert facts["arch"] == platform.machine()
    assert facts["kernel"] == platform.release()
    assert facts["python"] == platform.python_version()
    assert facts["cpu_flags"] == ["avx", "avx2", "fpu", "sse2"]
    assert facts["cpu_flags_sha256"] == flags_digest(facts["cpu_flags"])
    assert facts["cpu_model"].startswith("Intel")
    assert "dmtcp" in facts and "glibc" in facts
    real = environment_facts()
    assert real["cpu_flags"], "the flags of this machine's /proc/cpuinfo"
    assert real["glibc"] and real["glibc"][0].isdigit()


def facts(arch="x86_64", flags=("avx", "avx2", "sse2"), dmtcp="4.2.0"):
    flags = sorted(flags)
    return {"arch": arch, "cpu_flags": flags, "cpu_flags_sha256": flags_digest(flags), "dmtcp": dmtcp,
            "kernel": "6.18.0", "glibc": "2.36"}


@pytest.mark.parametrize(("then", "here", "ok", "why"), [
    (facts(), facts(), True, "same architecture"),
    (facts(), facts(flags=("avx", "avx2", "avx512f", "sse2")), True, "superset"),
    (facts(flags=("avx", "avx2", "avx512f", "sse2")), facts(), False, "lacks flags.*avx512f"),
    (facts(), facts(arch="aarch64"), False, "architecture differs"),
    (facts(), facts(dmtcp="4.1.0"), False, "DMTCP version differs"),
    (facts(), facts(dmtcp=None), False, "DMTCP is not installed here"),
    ({**facts(), "dmtcp": None}, facts(), False, "no DMTCP version"),
    ({}, facts(), False, "no architecture"),
    ({**facts(), "cpu_flags": None}, facts(), True, "same architecture"),  # digest only, and equal
    ({**facts(), "cpu_flags": None, "cpu_flags_sha256": "x"}, facts(), False, "only their digest"),
    ({"arch": "x86_64", "dmtcp": "4.2.0"}, facts(), False, "no CPU flags"),
])
def test_dmtcp_checkpoints_restore_only_where_the_cpu_and_dmtcp_match(then, here, ok, why):
    verdict, reason = compatible(then, here, "dmtcp")
    assert verdict is ok
    assert re.search(why, reason), reason


@pytest.mark.parametrize("method", ["signal", "none"])
def test_signal_and_none_checkpoints_restore_anywhere(method):
    assert compatible({}, facts(arch="aarch64"), method)[0] is True


def test_unknown_methods_are_not_compatible():
    assert compatible(facts(), facts(), "criu") == (False, "unknown checkpoint method 'criu'")
