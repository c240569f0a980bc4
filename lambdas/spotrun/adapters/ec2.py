"""EC2: launch workers one call per pool, terminate them, ask whether they are alive, read spot prices."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from spotrun.domain.launches import (
    CAPACITY_ERRORS,
    GONE,
    THROTTLING_ERRORS,
    InstanceStatus,
    LaunchRequest,
    LaunchResult,
    ManagedInstance,
)

MANAGED_TAG = "spotrun:managed"


class Ec2Compute:
    """Takes a boto3 EC2 client, the launch template id, the subnet per availability zone and the cluster
    placement group per availability zone (the deployment's, for gangs that ask to be placed together)."""

    def __init__(self, client: Any, launch_template_id: str, subnets: dict[str, str],
                 placement_groups: dict[str, str] | None = None):
        self.client = client
        self.launch_template_id = launch_template_id
        self.subnets = subnets
        self.placement_groups = placement_groups or {}

    @property
    def zones(self) -> list[str]:
        return sorted(self.subnets)

    def launch(self, request: LaunchRequest) -> LaunchResult:
        subnet = self.subnets.get(request.zone)
        if subnet is None:
            return LaunchResult(error_code="Unsupported", error_message=f"no subnet in {request.zone}")
        group = self.placement_groups.get(request.zone) if request.cluster else None
        if request.cluster and group is None:
            return LaunchResult(error_code="Unsupported", error_message=f"no cluster placement group in {request.zone}")
        tags = {MANAGED_TAG: "true", **request.tags}
        if request.count == 1:
            tags.update(request.per_instance_tags[0])
        params: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateId": self.launch_template_id, "Version": "$Default"},
            # All or nothing per pool: a pool that cannot take the whole batch is skipped for the next one,
            # which keeps one call per pool and behaves the same on EC2 and on moto.
            "InstanceType": request.instance_type, "MinCount": request.count, "MaxCount": request.count,
            "SubnetId": subnet,
            "ClientToken": request.token,
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                for kind in ("instance", "volume")
            ],
        }
        if group is not None:
            params["Placement"] = {"GroupName": group}
        if request.spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        try:
            # Throttling is retried by the client itself (botocore's standard mode: backoff with jitter), never
            # again here: a loop around it multiplied the calls (5 x 6) against an API that asked for fewer.
            answer = self.client.run_instances(**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in CAPACITY_ERRORS or code in THROTTLING_ERRORS:
                return LaunchResult(error_code=code, error_message=error.response["Error"].get("Message", ""))
            raise
        ids = [i["InstanceId"] for i in answer.get("Instances", [])]
        return LaunchResult(instance_ids=ids)

    def terminate(self, instance_ids: Sequence[str]) -> None:
        for start in range(0, len(instance_ids), 500):
            chunk = list(instance_ids[start:start + 500])
            try:
                self.client.terminate_instances(InstanceIds=chunk)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                    raise

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Each instance's state and the reason code of its last transition; one EC2 no longer knows is
        `GONE` (terminated, no reason)."""
        out = {i: GONE for i in instance_ids}
        for start in range(0, len(instance_ids), 500):
            chunk = list(instance_ids[start:start + 500])
            try:
                pages = self.client.get_paginator("describe_instances").paginate(InstanceIds=chunk)
                for page in pages:
                    for reservation in page.get("Reservations", []):
                        for instance in reservation.get("Instances", []):
                            out[instance["InstanceId"]] = _status(instance)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                    raise
                for instance_id in chunk:  # ask one by one to tell the unknown ones apart
                    if len(chunk) > 1:
                        out.update(self.statuses([instance_id]))
        return out

    def managed_instances(self) -> list[ManagedInstance]:
        """Every live instance spotrun launched, with its tags (a tag-filtered EC2 query, not a table scan)."""
        found: list[ManagedInstance] = []
        pages = self.client.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    found.append({
                        "instance_id": instance["InstanceId"], "state": instance["State"]["Name"],
                        "launched_at": instance.get("LaunchTime"),
                        "tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])},
                    })
        return found


def _status(instance: dict[str, Any]) -> InstanceStatus:
    """EC2's StateReason code (e.g. `Server.SpotInstanceTermination`), else the code a StateTransitionReason
    starts with, if it names one (`Server.X: ...`)."""
    code = str((instance.get("StateReason") or {}).get("Code") or "")
    if not code:
        transition = str(instance.get("StateTransitionReason") or "")
        head = transition.split(":", 1)[0]
        code = head if head.startswith(("Server.", "Client.")) else ""
    return InstanceStatus(instance["State"]["Name"], code[:128])


class Ec2SpotPrices:
    """Current spot prices per pool from DescribeSpotPriceHistory, cached for a few minutes."""

    def __init__(self, client: Any, ttl_seconds: float = 300.0):
        self.client = client
        self.ttl_seconds = ttl_seconds
        self._cache: dict[str, float] = {}
        self._fetched = 0.0

    def prices(self, instance_types: Sequence[str], now: datetime) -> dict[str, float]:
        if self._cache and time.monotonic() - self._fetched < self.ttl_seconds:
            return self._cache
        prices: dict[str, float] = {}
        pages = self.client.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=list(instance_types), ProductDescriptions=["Linux/UNIX"],
            StartTime=now.astimezone(UTC),
        )
        for page in pages:
            for row in page.get("SpotPriceHistory", []):
                prices.setdefault(f"{row['InstanceType']}@{row['AvailabilityZone']}", float(row["SpotPrice"]))
        self._cache, self._fetched = prices, time.monotonic()
        return prices
