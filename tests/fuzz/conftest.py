"""Fixtures for the fuzz and bad-input tests: one moto account per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import FakeClock, FakePrices
from tests.support import mocked_aws


@pytest.fixture(scope="module")
def module_env() -> Iterator[tuple[Any, dict[str, str]]]:
    """A moto account provisioned as the `aws` and `env` fixtures do, shared by a module's tests:
    hundreds of requests that must store nothing need not each provision an account."""
    from spotrun.provision import provision

    with pytest.MonkeyPatch.context() as patch, mocked_aws(patch) as session:
        yield session, provision(session)


@pytest.fixture(scope="module")
def module_cp(module_env: tuple[Any, dict[str, str]]) -> Any:
    """The control plane on that account, as the `cp` fixture builds it."""
    from spotrun.aws import control_plane_from_env

    session, env = module_env
    plane = control_plane_from_env(env, session=session)
    plane.clock = FakeClock()
    plane.prices = FakePrices({"c6i.large@us-east-1a": 0.040})
    return plane
