"""Acknowledging cdk-nag findings (cdk-nag v3: CDK's native `Validations.of().acknowledge()`).

Every acknowledgment names one rule, optionally one finding of it (`AwsSolutions-IAM5[Resource::*]`),
sits on the narrowest construct that carries the finding, and says why the finding is acceptable.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge `rule` (e.g. 'IAM5') on `scope` and its children, per finding when given."""
    if len(reason) < 40:
        raise ValueError(f"the reason for {rule} on {scope.node.path} is too short to be specific")
    ids = [f"{PACK}-{rule}[{finding}]" for finding in findings] or [f"{PACK}-{rule}"]
    for rule_id in ids:
        Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def logical_ref(construct: IConstruct) -> str:
    """How cdk-nag names a resource inside a finding id (`Resource::<LogicalId.Arn>/...`)."""
    element = construct.node.default_child
    if not isinstance(element, CfnElement):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource as its default child")
    logical_id = Stack.of(construct).resolve(element.logical_id)
    assert isinstance(logical_id, str)
    return logical_id
