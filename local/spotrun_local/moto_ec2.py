"""Two things EC2 does that moto's EC2 leaves out, done on moto's backend in this process (the local
runtime runs moto's server in-process; the tests run moto in-process too):

- `reclaim`: Spot takes an instance back. EC2 terminates it with the state reason
  `Server.SpotInstanceTermination` (API StateReason, "Spot instance termination"); moto only knows a
  user's TerminateInstances (`Client.UserInitiatedShutdown`). The control plane reads that reason to
  tell a reclaim whose warning never came from any other lost instance.
- `instances_launched_with`: RunInstances is idempotent on its ClientToken (the same token returns
  the instances the first call launched); moto launches again. The local compute looks the token up
  first, as EC2 would answer it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from spotrun.adapters.ec2 import Ec2Compute
from spotrun.domain.launches import LaunchRequest, LaunchResult

ACCOUNT = "123456789012"  # moto's default account
SPOT_RECLAIM_CODE = "Server.SpotInstanceTermination"


def _backend(region: str, account: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def reclaim(instance_id: str, region: str = "us-east-1", account: str = ACCOUNT) -> None:
    """Terminate `instance_id` the way a spot reclaim does."""
    from moto.ec2.models.instances import StateReason

    backend = _backend(region, account)
    backend.terminate_instances([instance_id])
    instance = backend.get_instance(instance_id)
    instance.state_reason = StateReason(f"{SPOT_RECLAIM_CODE}: Spot instance termination", SPOT_RECLAIM_CODE)
    instance._reason = f"Service initiated ({datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S GMT')})"  # noqa: SLF001


def instances_launched_with(token: str, region: str = "us-east-1", account: str = ACCOUNT) -> list[str]:
    """The instances an earlier RunInstances with this ClientToken launched, in launch order."""
    if not token:
        return []
    return [i.id for i in _backend(region, account).all_instances() if getattr(i, "client_token", None) == token]


class IdempotentEc2(Ec2Compute):
    """`Ec2Compute` on moto, answering a ClientToken it has seen as EC2 does: with the instances of that
    first call, not new ones (a launch whose answer was lost is sent again with its token)."""

    _lock = threading.Lock()  # one token's lookup and launch at a time, across control plane generations

    def __init__(self, client: Any, launch_template_id: str, subnets: dict[str, str], region: str = "us-east-1",
                 account: str = ACCOUNT, **kwargs: Any):
        super().__init__(client, launch_template_id, subnets, **kwargs)
        self.region, self.account = region, account

    def launch(self, request: LaunchRequest) -> LaunchResult:
        with self._lock:
            earlier = instances_launched_with(request.token, self.region, self.account)
            if earlier:
                return LaunchResult(instance_ids=earlier)
            return super().launch(request)
