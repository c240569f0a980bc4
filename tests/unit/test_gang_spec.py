"""`nodes` in the spec, and what a gang's moves and usage count: its instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotrun.domain.accounting import attempt_usage, drain_usage, pool_usage
from spotrun.domain.lifecycle import TaskChange
from spotrun.domain.model import Task, TaskState, task_instances
from spotrun.domain.spec import SpecError, parse_spec

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_nodes_is_one_by_default_and_a_gang_is_two_to_sixty_four_instances():
    assert parse_spec({"name": "one", "command": "x"}).nodes == 1
    assert parse_spec({"name": "g", "command": "x", "nodes": 64, "checkpoint": {"method": "signal"}}).nodes == 64
    for wrong in (0, 65, "2", True):
        with pytest.raises(SpecError) as error:
            parse_spec({"name": "g", "command": "x", "nodes": wrong, "checkpoint": {"method": "none"}})
        assert error.value.problems[0]["field"] == "nodes"


def test_a_gang_may_be_checkpointed_with_dmtcp_the_default_method():
    # DMTCP with spotrun's gang patch checkpoints a gang (docs/gangs.md); the worker refuses a DMTCP without it
    assert parse_spec({"name": "g", "command": "x", "nodes": 2}).checkpoint.method == "dmtcp"
    assert parse_spec({"name": "g", "command": "x", "nodes": 4, "checkpoint": {"method": "dmtcp"}}).nodes == 4


def test_a_gang_move_counts_all_its_instances_against_the_caps():
    gang = Task("j", 0, TaskState.QUEUED, 0, nodes=4)
    assert TaskChange(gang, TaskState.LAUNCHING, "TaskLaunching", new_attempt=True).active_delta == 4
    running = Task("j", 0, TaskState.RUNNING, 1, nodes=4)
    assert TaskChange(running, TaskState.SUCCEEDED, "TaskSucceeded").active_delta == -4
    assert TaskChange(Task("j", 1, TaskState.QUEUED, 0), TaskState.LAUNCHING, "x", new_attempt=True).active_delta == 1


def test_a_gang_bills_its_instances_and_its_interruption_once():
    usage = attempt_usage("c6i.large@us-east-1a", T0, 0.036, T0 + timedelta(hours=1), 1, 0, 1, 3000.0, nodes=3)
    assert usage["c6i.large@us-east-1a|instance_seconds"] == 3 * 3600
    assert usage["c6i.large@us-east-1a|cost"] == pytest.approx(3 * 0.036)
    assert usage["c6i.large@us-east-1a|interruptions"] == 1
    assert drain_usage("p", T0, 0.036, T0 + timedelta(seconds=10), nodes=3)["p|instance_seconds"] == 30
    assert pool_usage(1, 0, 1, 10.0, nodes=3) == {"executions": 1, "failures": 0, "interruptions": 1,
                                                  "exec_seconds": 10.0, "running": -3}


def test_the_instances_of_a_task_are_its_gangs_or_its_one():
    assert task_instances(Task("j", 0, TaskState.RUNNING, 1, instance_id="i-0", nodes=2,
                               gang_instances=("i-0", "i-1"))) == ("i-0", "i-1")
    assert task_instances(Task("j", 0, TaskState.RUNNING, 1, instance_id="i-9")) == ("i-9",)
    assert task_instances(Task("j", 0, TaskState.QUEUED, 0)) == ()


def test_placement_cluster_is_for_gangs_and_zone_is_the_default():
    gang = {"name": "g", "command": "x", "nodes": 2, "checkpoint": {"method": "signal"}}
    assert parse_spec(gang).placement == "zone"
    assert parse_spec({**gang, "placement": "cluster"}).placement == "cluster"
    with pytest.raises(SpecError) as error:
        parse_spec({**gang, "nodes": 1, "placement": "cluster"})
    assert "nodes of 2 or more" in str(error.value)
    with pytest.raises(SpecError) as error:
        parse_spec({**gang, "placement": "spread"})
    assert error.value.problems[0]["field"] == "placement"
