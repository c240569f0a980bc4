"""Update and condition expressions, built with placeholders so attribute names never clash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spotrun.adapters.dynamo.codec import serialize


class Expression:
    """Builds update/condition expressions with placeholders, so attribute names never clash."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._adds: list[str] = []
        self._removes: list[str] = []
        self.conditions: list[str] = []

    def name(self, path: str) -> str:
        parts = []
        for part in path.split("."):
            placeholder = f"#n{len(self.names)}"
            self.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, path: str, value: Any) -> None:
        if value is None:
            self.remove(path)
        else:
            self._sets.append(f"{self.name(path)} = {self.value(value)}")

    def add(self, path: str, amount: int | float) -> None:
        self._adds.append(f"{self.name(path)} {self.value(amount)}")

    def remove(self, path: str) -> None:
        self._removes.append(self.name(path))

    def condition(self, text: str, **operands: Any) -> None:
        for key, operand in operands.items():
            text = text.replace("{" + key + "}", self.name(operand[1:]) if str(operand).startswith("@") else self.value(operand))
        self.conditions.append(text)

    def add_in_map(self, map_name: str, key: str, amount: int | float) -> None:
        """ADD to `map_name[key]`, where the key may hold dots (pool names do)."""
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = key
        self._adds.append(f"{self.name(map_name)}.{placeholder} {self.value(amount)}")

    def condition_in(self, path: str, allowed: Sequence[Any]) -> None:
        """The attribute at `path` equals one of `allowed`."""
        name = self.name(path)
        self.conditions.append(" OR ".join(f"{name} = {self.value(v)}" for v in allowed))

    def update(self) -> dict[str, Any]:
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        out: dict[str, Any] = {"UpdateExpression": " ".join(clauses)}
        out.update(self.common())
        return out

    def common(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.conditions:
            out["ConditionExpression"] = " AND ".join(f"({c})" for c in self.conditions)
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = serialize(self.values)
        return out
