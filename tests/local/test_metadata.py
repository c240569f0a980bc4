"""The metadata stand-in speaks IMDSv2 as the agent's client expects, over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from spotrun_local.metadata import MetadataService
from spotrun_worker.imds import Imds


@pytest.fixture
def service():
    running = MetadataService().start()
    running.register("i-0abc", "c6i.large", "us-east-1a")
    yield running
    running.stop()


def test_the_agent_learns_who_it_is(service):
    imds = Imds(service.endpoint("i-0abc"))
    assert imds.instance_id() == "i-0abc"
    assert imds.get("placement/availability-zone") == "us-east-1a"


def test_no_action_is_a_404_until_a_reclaim_is_scheduled(service):
    imds = Imds(service.endpoint("i-0abc"))
    assert imds.spot_action() is None and imds.rebalance_notice() is False
    service.schedule_action("i-0abc", "terminate", datetime(2026, 11, 23, 12, 2, tzinfo=UTC))
    action = imds.spot_action()
    assert action["action"] == "terminate" and action["deadline"] == datetime(2026, 11, 23, 12, 2, tzinfo=UTC)
    service.recommend_rebalance("i-0abc", datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    assert imds.rebalance_notice() is True


def test_a_get_without_a_token_is_refused_as_by_imdsv2(service):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{service.endpoint('i-0abc')}/latest/meta-data/instance-id", timeout=2)
    assert refused.value.code == 401


def test_each_instance_sees_only_its_own_notices(service):
    service.register("i-0def", "m6i.large", "us-east-1c")
    service.schedule_action("i-0abc", "terminate", datetime(2026, 11, 23, 12, 2, tzinfo=UTC))
    assert Imds(service.endpoint("i-0def")).spot_action() is None
