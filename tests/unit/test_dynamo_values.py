"""The store's own AttributeValue conversion: the same wire form as boto3's serializer for what
spotrun stores, and a clear refusal (not a service error after other writes) for what DynamoDB cannot hold."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from boto3.dynamodb.types import TypeSerializer

from spotrun.adapters.dynamo import UnstorableValue, deserialize, serialize
from spotrun.domain.model import TaskState

ITEM = {
    "pk": "TASK#j-1#000001", "index": 1, "attempt": 0, "progress": 0.25, "price": 0.0347, "done": False,
    "env": {"SEED": "7", "EMPTY": ""}, "avoid_pools": ["c6i.large@us-east-1a"], "nothing": None,
    "nested": {"a": [1, 2.5, "x", {"b": None, "c": True}]}, "big": 10**37, "negative": -3, "zero": 0.0,
}


def boto3_form(item):
    def plain(value):
        if isinstance(value, float):
            return Decimal(repr(value))
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return {k: TypeSerializer().serialize(plain(v)) for k, v in item.items() if v is not None}


def test_items_serialize_as_boto3_would_and_read_back_the_same():
    assert serialize(ITEM) == boto3_form(ITEM)
    back = deserialize(serialize(ITEM))
    expected = {k: v for k, v in ITEM.items() if v is not None}
    expected["nested"] = {"a": [1, 2.5, "x", {"c": True}]}
    assert back == expected


def test_enums_and_times_become_strings():
    wire = serialize({"state": TaskState.RUNNING, "at": datetime(2026, 11, 23, 12, 0, tzinfo=UTC)})
    assert wire == {"state": {"S": "RUNNING"}, "at": {"S": "2026-11-23T12:00:00.000000Z"}}


def test_a_float_too_small_for_dynamodb_is_stored_as_zero():
    assert serialize({"progress": 1e-200}) == {"progress": {"N": "0"}}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e200, 10**40, -(10**38),
                                   Decimal("1E-140"), Decimal("1." + "1" * 40), object()])
def test_values_dynamodb_cannot_hold_are_refused_by_name(value):
    with pytest.raises(UnstorableValue):
        serialize({"x": value})
