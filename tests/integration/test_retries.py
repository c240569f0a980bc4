"""Retries that do not multiply: RunInstances is retried by botocore alone (standard mode, its backoff and
jitter), never in a loop around it; the clients are built with that mode."""

from __future__ import annotations

from botocore.exceptions import ClientError

from spotrun.domain.launches import LaunchRequest


def test_a_throttled_launch_is_one_call_of_the_client_which_retries_by_itself(cp):
    calls = []

    def throttled(**params):
        calls.append(params["ClientToken"])
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "RunInstances")

    cp.compute.client.run_instances = throttled
    zone = sorted(cp.settings.subnets)[0]
    result = cp.compute.launch(LaunchRequest("c6i.large", zone, True, {"spotrun:job": "j-1"}, [{}], token="t-1"))
    assert (result.error_code, calls) == ("RequestLimitExceeded", ["t-1"])  # 5 calls (5 x 6 sends) before


def test_the_control_planes_clients_retry_in_standard_mode(cp):
    for client in (cp.compute.client, cp.store.client):
        retries = client.meta.config.retries
        assert retries["mode"] == "standard" and retries["total_max_attempts"] == 7  # max_attempts=6: 6 retries
