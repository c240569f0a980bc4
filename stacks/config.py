"""Deployment settings, read from CDK context (`cdk.json`, overridable with `cdk -c key=value`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constructs import Node

from stacks import REPO_ROOT

PREFIX = "spotrun:"
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")


def cdk_json_context(path: Path = REPO_ROOT / "cdk.json") -> dict[str, Any]:
    """The `context` block of cdk.json.

    The CDK CLI passes it to the app itself; running `python app.py` directly (the offline synth)
    does not, so the app primes the App with it. Values from the CLI still win: the App applies
    the CLI's context after these defaults.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    context = document.get("context", {})
    if not isinstance(context, dict):
        raise ValueError(f"{path}: 'context' must be an object")
    return context


@dataclass(frozen=True)
class SpotrunConfig:
    account_max_instances: int = 100
    pool_max_instances: int = 20
    instance_types: tuple[str, ...] = (
        "c6i.large",
        "c6i.xlarge",
        "c6a.large",
        "m6i.large",
        "m6a.large",
        "c7i.large",
        "r6i.large",
    )
    notification_email: str | None = None  # subscribed to job events
    operations_email: str | None = None  # subscribed to the operators' alarms
    # The spend alarm: what the running instances may cost per hour (spot and on-demand) before it fires.
    spend_alarm_per_hour: float = 50.0
    max_azs: int = 3
    root_volume_gib: int = 50
    # Version of the public layer AWSLambdaPowertoolsPythonV3-python312-x86_64 (bump deliberately).
    powertools_layer_version: int = 27
    # Your own worker AMI (built with worker/image/build-worker-image.sh) instead of the stack's
    # EC2 Image Builder pipeline; None builds the image at deploy.
    worker_ami: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.pool_max_instances <= self.account_max_instances:
            raise ValueError("spotrun:poolMaxInstances must be between 1 and spotrun:accountMaxInstances")
        if not self.instance_types:
            raise ValueError("spotrun:instanceTypes must name at least one instance type")
        for name in self.instance_types:
            if not _INSTANCE_TYPE.match(name):
                raise ValueError(f"spotrun:instanceTypes: {name!r} is not an instance type like 'c6i.large'")
        for key, email in (("notificationEmail", self.notification_email), ("operationsEmail", self.operations_email)):
            if email is not None and not _EMAIL.match(email):
                raise ValueError(f"spotrun:{key}: {email!r} is not an email address")
        if not self.spend_alarm_per_hour > 0:
            raise ValueError("spotrun:spendAlarmPerHour must be a positive number of US dollars per hour")
        if not 1 <= self.max_azs <= 6:
            raise ValueError("spotrun:maxAzs must be between 1 and 6")
        if not 8 <= self.root_volume_gib <= 16_384:
            raise ValueError("spotrun:rootVolumeGiB must be between 8 and 16384")
        if self.powertools_layer_version < 1:
            raise ValueError("spotrun:powertoolsLayerVersion must be a positive layer version")
        if self.worker_ami is not None and not _AMI.match(self.worker_ami):
            raise ValueError(f"spotrun:workerAmi: {self.worker_ami!r} is not an AMI id like 'ami-0123456789abcdef0' "
                             "(leave it empty to build the worker image at deploy)")

    @classmethod
    def from_context(cls, node: Node) -> SpotrunConfig:
        """Read `spotrun:*` context; values given with `-c` on the command line arrive as strings."""
        defaults = cls()

        def value(key: str, default: Any) -> Any:
            found = node.try_get_context(PREFIX + key)
            return default if found is None or found == "" else found

        return cls(
            account_max_instances=int(value("accountMaxInstances", defaults.account_max_instances)),
            pool_max_instances=int(value("poolMaxInstances", defaults.pool_max_instances)),
            instance_types=_string_list(value("instanceTypes", defaults.instance_types)),
            notification_email=value("notificationEmail", None),
            operations_email=value("operationsEmail", None),
            spend_alarm_per_hour=float(value("spendAlarmPerHour", defaults.spend_alarm_per_hour)),
            max_azs=int(value("maxAzs", defaults.max_azs)),
            root_volume_gib=int(value("rootVolumeGiB", defaults.root_volume_gib)),
            powertools_layer_version=int(value("powertoolsLayerVersion", defaults.powertools_layer_version)),
            worker_ami=value("workerAmi", None),
        )


def _string_list(raw: Any) -> tuple[str, ...]:
    """A JSON list from cdk.json, or 'a,b,c' / '["a","b"]' from the command line."""
    if isinstance(raw, str):
        text = raw.strip()
        raw = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"expected a list of strings, got {raw!r}")
    return tuple(str(item).strip() for item in raw if str(item).strip())
