"""Control planes for the benchmark: one on locally answered boto3 clients (no AWS, no moto), one on moto
with counting clients."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bench.scale.meter import CallLog, CountingClient, FakeDynamo, MeteredDynamo, fake_sns
from spotrun.adapters.dynamo import DynamoStore
from spotrun.adapters.sns import SnsBus
from spotrun.aws import control_plane_from_env
from spotrun.control import ControlPlane, Settings

REGION = "us-east-1"
PRICES = {  # spot $/h per pool (moto's price history is a placeholder); the broker only ranks them
    "c6i.large@us-east-1a": 0.040, "c6i.large@us-east-1b": 0.034, "c6i.large@us-east-1c": 0.038,
    "m6i.large@us-east-1a": 0.045, "m6i.large@us-east-1b": 0.047, "m6i.large@us-east-1c": 0.043,
}


class FixedPrices:
    def prices(self, instance_types: Any, now: datetime) -> dict[str, float]:
        return dict(PRICES)


def job_spec(tasks: int, parameters: bool = False, max_concurrency: int = 2_000) -> dict[str, Any]:
    """The benchmark's problem: `tasks: n`, or n parameter sets (one small variable each)."""
    spec: dict[str, Any] = {
        "name": "scale", "command": ["python", "work.py"], "checkpoint": {"method": "signal"},
        "resources": {"vcpus": 2, "memory_gib": 4}, "max_concurrency": max_concurrency,
    }
    if parameters:
        spec["parameters"] = [{"SEED": str(i)} for i in range(tasks)]
    else:
        spec["tasks"] = tasks
    return spec


def fake_plane(log: CallLog, latency_seconds: float, validate: bool = False) -> tuple[ControlPlane, FakeDynamo]:
    """A control plane whose DynamoDB and SNS clients are answered locally (enough for submit_job);
    `validate=True` turns botocore's client-side parameter validation on for DynamoDB (the product turns it off)."""
    settings = Settings(table="spotrun-state", control_topic_arn=f"arn:aws:sns:{REGION}:123456789012:spotrun-control",
                        notify_topic_arn=f"arn:aws:sns:{REGION}:123456789012:spotrun-notifications")
    dynamo = FakeDynamo(log, latency_seconds, validate)
    bus = SnsBus(fake_sns(log, latency_seconds), settings.control_topic_arn, settings.notify_topic_arn)
    return ControlPlane(settings, DynamoStore(dynamo, settings.table), compute=None, bus=bus), dynamo


@contextlib.contextmanager
def moto_session() -> Iterator[Any]:
    """moto's in-process AWS with dummy credentials (state is dropped on exit), transactions patched
    to back the table up once instead of once per item (see _OneSnapshot)."""
    import boto3
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                              "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
                      AWS_DEFAULT_REGION=REGION)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        with mock_aws(), _fast_moto_transactions():
            yield boto3.session.Session(region_name=REGION)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def moto_image(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """An item straight from moto's backend in wire form (for the unit estimate; no API request)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    item = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_item(table, key)
    return item.to_json()["Attributes"] if item is not None else None


class _OneSnapshot:
    """moto backs up the whole table once per *item* of a TransactWriteItems before applying any of
    them (identical copies, O(items x table)); this takes one copy per table per transaction, with the
    same rollback semantics, so transactions on a table of thousands of tasks do not take seconds."""

    def __init__(self) -> None:
        self._copies: dict[int, Any] = {}

    def deepcopy(self, value: Any) -> Any:
        if id(value) not in self._copies:
            self._copies[id(value)] = copy.deepcopy(value)
        return self._copies[id(value)]

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@contextlib.contextmanager
def _fast_moto_transactions() -> Iterator[None]:
    from moto.dynamodb import models

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        models.copy = _OneSnapshot()  # type: ignore[assignment]
        try:
            return original(backend, transact_items)
        finally:
            models.copy = copy  # type: ignore[assignment]

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        models.DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]


@dataclasses.dataclass
class MotoPlane:
    cp: ControlPlane
    env: dict[str, str]
    session: Any
    log: CallLog
    dynamo: CountingClient
    raw_dynamo: Any

    def use(self, log: CallLog) -> CallLog:
        """Send every counting client's records to `log` from now on."""
        for client in (self.cp.store.client, self.cp.compute.client, self.cp.bus.client):
            client.log = log
        self.log = log
        return log


def moto_plane(session: Any, metered: bool = False, account_max: int = 100, pool_max: int = 20,
               clock: Any = None, wide_subnets: bool = False) -> MotoPlane:
    """Resources from spotrun.provision, spotrun.aws.control_plane_from_env, counting DynamoDB/EC2/SNS clients."""
    from spotrun.provision import provision

    env = provision(session)
    cp = control_plane_from_env(env, session=session)
    cp.settings = dataclasses.replace(cp.settings, account_max_instances=account_max, pool_max_instances=pool_max)
    cp.prices = FixedPrices()
    if wide_subnets:  # provision() makes /24 subnets: too few addresses for thousands of moto instances
        ec2 = session.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.64.0.0/16")["Vpc"]["VpcId"]
        cp.compute.subnets = {
            zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.64.{64 * n}.0/18", AvailabilityZone=zone)["Subnet"]["SubnetId"]
            for n, zone in enumerate(sorted(cp.compute.subnets))
        }
    cp.compute._sleep = lambda seconds: None
    if clock is not None:
        cp.clock = clock
    log = CallLog()
    raw = cp.store.client
    cp.store.client = MeteredDynamo(raw, log, moto_image) if metered else CountingClient(raw, "dynamodb", log)
    cp.compute.client = CountingClient(cp.compute.client, "ec2", log)
    cp.bus.client = CountingClient(cp.bus.client, "sns", log)
    return MotoPlane(cp, env, session, log, cp.store.client, raw)
