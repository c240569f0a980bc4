"""Shared fixtures: moto with dummy credentials, the control plane built from `spotrun.resources`,
a clock the tests move, and helpers that shape events exactly as AWS delivers them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import mocked_aws

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "spotrun")
os.environ.setdefault("POWERTOOLS_DEV", "false")


class FakeClock:
    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class FakePrices:
    """Spot prices per pool, set by the test (moto's price history is a constant placeholder)."""

    def __init__(self, prices: dict[str, float] | None = None):
        self.table = dict(prices or {})
        self.calls = 0

    def prices(self, instance_types: Any, now: datetime) -> dict[str, float]:
        self.calls += 1
        return dict(self.table)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mocked_aws(monkeypatch) as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prices() -> FakePrices:
    return FakePrices({
        "c6i.large@us-east-1a": 0.040, "c6i.large@us-east-1b": 0.034, "c6i.large@us-east-1c": 0.038,
        "m6i.large@us-east-1a": 0.045, "m6i.large@us-east-1b": 0.047, "m6i.large@us-east-1c": 0.043,
    })


@pytest.fixture
def env(aws: Any) -> dict[str, str]:
    from spotrun.provision import provision

    return provision(aws)


@pytest.fixture
def cp(aws: Any, env: dict[str, str], clock: FakeClock, prices: FakePrices) -> Any:
    from spotrun.aws import control_plane_from_env

    plane = control_plane_from_env({**env, "SPOTRUN_ACCOUNT_MAX_INSTANCES": "50", "SPOTRUN_POOL_MAX_INSTANCES": "10"},
                                   session=aws)
    plane.clock = clock
    plane.prices = prices
    return plane


@pytest.fixture
def context() -> Any:
    from tests.support import LambdaContextStub

    return LambdaContextStub()


@pytest.fixture(scope="session")
def dmtcp_bin() -> Any:
    """The real DMTCP 4.2.0's bin directory, shared by every real-DMTCP test: `make dmtcp`'s build (found,
    or built once), or SPOTRUN_DMTCP_BIN. Skips only when the vendored source tarball is absent and
    nothing names another DMTCP; when the tarball is there, a DMTCP that cannot be found is a failure."""
    import shutil
    from pathlib import Path

    from spotrun_local import dmtcp_build

    source = dmtcp_build.tarball()
    if not source.is_file() and not os.environ.get("SPOTRUN_DMTCP_BIN"):
        pytest.skip(f"the vendored DMTCP source {source} is absent (../shared/vendor beside the checkout), "
                    f"so no DMTCP is built for the real-DMTCP tests")
    try:
        found = dmtcp_build.find_bin()
    except dmtcp_build.DmtcpMissing as missing:
        pytest.fail(f"DMTCP should be available here but is not: {missing}")
    bin_dir = found if found is not None else Path(shutil.which("dmtcp_launch") or "").parent
    # The code under test finds DMTCP the way an agent does (SPOTRUN_DMTCP_BIN, as `make test` exports):
    # a test run by hand gets the same build, not "no DMTCP version" in its checkpoints' facts.
    os.environ.setdefault("SPOTRUN_DMTCP_BIN", str(bin_dir))
    return bin_dir
