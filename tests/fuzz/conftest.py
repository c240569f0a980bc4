"""Fixtures for the fuzz and bad-input tests: one moto account per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import FakeClock, FakePrices


@pytest.fixture(scope="module")
def module_env() -> Iterator[tuple[Any, dict[str, str]]]:
    """A moto account provisioned as the `aws` and `env` fixtures do, shared by a module's tests:
    hundreds of requests that must store nothing need not each provision an account."""
    from moto import mock_aws

    from spotrun.provision import provision

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            session = boto3.session.Session(region_name="us-east-1")
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
