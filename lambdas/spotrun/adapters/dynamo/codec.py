"""DynamoDB's wire format: values to AttributeValues and back, times, and the API's page tokens.

Numbers are checked here, before a write, against what DynamoDB can hold (finite, at most 38
significant digits, magnitude 1E-130..1E+126): a value it would reject is an `UnstorableValue`, not
a failed write retried into a dead-letter queue.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# DynamoDB numbers: at most 38 significant digits, magnitude 1E-130 up to (not including) 1E+126.
_SMALLEST = 1e-130
_LARGEST = 1e126


class UnstorableValue(ValueError):
    """A value DynamoDB cannot hold (NaN, infinity, a number out of its range, an unknown type)."""


def _number(value: int | float | Decimal) -> str:
    """The wire form of a number, refusing what DynamoDB would reject after the fact.

    Floats print as their shortest round-trip form (at most 17 significant digits); a float closer
    to zero than DynamoDB's smallest magnitude is stored as 0 (a progress of 1e-200 is 0).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnstorableValue(f"{value!r} is not a finite number")
        if value and abs(value) < _SMALLEST:
            return "0"
        if abs(value) >= _LARGEST:
            raise UnstorableValue(f"{value!r} is larger than DynamoDB numbers go")
        return str(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite() or (value and not Decimal("1E-130") <= abs(value) < Decimal("1E126")):
            raise UnstorableValue(f"{value} is out of DynamoDB's number range")
        digits = "".join(map(str, value.as_tuple().digits)).strip("0")
        if len(digits) > 38:
            raise UnstorableValue(f"{value} has more than 38 significant digits")
        return str(value)
    if abs(value) >= 10**38:
        raise UnstorableValue(f"{value} has more than 38 digits")
    return str(value)


def _wire(value: Any) -> dict[str, Any]:
    """One AttributeValue. Written for speed (a 100,000-task submit serializes every task item):
    exact type checks first, isinstance for subclasses (enums, IntEnum) after."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": _number(value)}
    if kind is bool:
        return {"BOOL": value}
    if kind is dict:
        return {"M": {str(k): _wire(v) for k, v in value.items() if v is not None}}
    if kind is list or kind is tuple:
        return {"L": [_wire(v) for v in value]}
    if kind is float:
        return {"N": _number(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, datetime):
        return {"S": iso(value)}
    if isinstance(value, str):  # StrEnum
        return {"S": str(value)}
    if isinstance(value, (int, Decimal)):
        return {"N": _number(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    if isinstance(value, (set, frozenset)) and value and all(isinstance(v, str) for v in value):
        return {"SS": sorted(value)}
    raise UnstorableValue(f"cannot store a {kind.__name__}")


def _plain(wire: dict[str, Any]) -> Any:
    """The Python value of one AttributeValue; integral numbers become int, others float."""
    kind, inner = next(iter(wire.items()))
    if kind == "S":
        return inner
    if kind == "N":
        if "." not in inner and "e" not in inner and "E" not in inner:
            return int(inner)
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "M":
        return {k: _plain(v) for k, v in inner.items()}
    if kind == "L":
        return [_plain(v) for v in inner]
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    if kind == "SS":
        return set(inner)
    if kind == "NS":
        return {_plain({"N": n}) for n in inner}
    return inner  # B, BS


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _wire(v) for k, v in item.items() if v is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in item.items()}


def encode_token(value: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode() if value else None


def decode_token(token: str | None) -> dict[str, Any] | None:
    """A cursor `encode_token` made, as a dict; ValueError for anything else. Each listing then checks
    every field of it (`spotrun.adapters.dynamo.jobs`, `.tasks`): a cursor is put into a key condition."""
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, json.JSONDecodeError, RecursionError):
        raise NotOurToken() from None
    if not isinstance(value, dict):
        raise NotOurToken()
    return value


class NotOurToken(ValueError):
    def __init__(self) -> None:
        super().__init__("the page token is not one this API gave out")
