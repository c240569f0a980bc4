"""Read a synthesized CloudFormation template the way the tests ask about it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

    from stacks.spotrun_stack import SpotrunStack

# Let the synth finish despite nag errors so a test can name them instead of a fixture erroring.
REPORT_ONLY = {"@aws-cdk/core:failSynthOnValidationErrors": False}

FUNCTION_TAG = "spotrun:function"
QUEUE_TAG = "spotrun:queue"
DEAD_LETTER_TAG = "spotrun:dead-letter-for"


def render(value: Any) -> str:
    """Flatten intrinsics into one string: Fn::Join is joined, Ref/GetAtt become ${Name[.Attr]}."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return ",".join(render(item) for item in value)
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Fn::Join":
            separator, parts = argument
            return separator.join(render(part) for part in parts)
        if name == "Ref":
            return f"${{{argument}}}"
        if name == "Fn::GetAtt":
            return f"${{{argument[0]}.{argument[1]}}}"
        if name == "Fn::Base64":
            return render(argument)
        if name == "Fn::Sub":
            return argument if isinstance(argument, str) else argument[0]
        if name == "Fn::Select":
            return f"${{Select:{argument[0]}:{render(argument[1])}}}"
        if name == "Fn::GetAZs":
            return "GetAZs"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]  # rendered
    condition: dict[str, Any]
    sid: str | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Statement:
        return cls(
            effect=raw["Effect"],
            actions=tuple(as_list(raw.get("Action", []))),
            resources=tuple(render(r) for r in as_list(raw.get("Resource", []))),
            condition=raw.get("Condition", {}),
            sid=raw.get("Sid"),
        )

    def allows(self, action: str) -> bool:
        return self.effect == "Allow" and action in self.actions


class StackTemplate:
    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.resources: dict[str, dict[str, Any]] = template["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == resource_type}

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})

    def tagged(self, resource_type: str, tag: str) -> dict[str, str]:
        """tag value -> logical id, for resources of a type carrying `tag`."""
        found: dict[str, str] = {}
        for logical_id, resource in self.of_type(resource_type).items():
            for item in resource.get("Properties", {}).get("Tags", []):
                if item["Key"] == tag:
                    assert item["Value"] not in found, f"two resources tagged {tag}={item['Value']}"
                    found[item["Value"]] = logical_id
        return found

    def queues(self) -> dict[str, str]:
        return self.tagged("AWS::SQS::Queue", QUEUE_TAG)

    def dead_letter_queues(self) -> dict[str, str]:
        return self.tagged("AWS::SQS::Queue", DEAD_LETTER_TAG)

    def functions(self) -> dict[str, str]:
        return self.tagged("AWS::Lambda::Function", FUNCTION_TAG)

    def role_of_function(self, key: str) -> str:
        role = self.props(self.functions()[key])["Role"]
        return role["Fn::GetAtt"][0]

    def statements_of_role(self, role_id: str) -> list[Statement]:
        """Every statement attached to a role: its inline policies and the AWS::IAM::Policy ones."""
        raw: list[dict[str, Any]] = []
        for policy in self.props(role_id).get("Policies", []):
            raw += policy["PolicyDocument"]["Statement"]
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                raw += policy["Properties"]["PolicyDocument"]["Statement"]
        return [Statement.parse(s) for s in raw]

    def managed_policies_of_role(self, role_id: str) -> list[str]:
        return [render(arn) for arn in self.props(role_id).get("ManagedPolicyArns", [])]

    def function_statements(self, key: str) -> list[Statement]:
        return self.statements_of_role(self.role_of_function(key))

    def policy_statements(self, resource_type: str) -> Iterator[tuple[str, Statement]]:
        """Statements of resource policies (bucket, queue, topic policies)."""
        for logical_id, resource in self.of_type(resource_type).items():
            document = resource["Properties"]["PolicyDocument"]
            for raw in document["Statement"]:
                yield logical_id, Statement.parse(raw)


@dataclass(frozen=True)
class Synthesized:
    stack: SpotrunStack
    template: Template
    query: StackTemplate
    assembly_dir: Path
    template_file: Path
