"""IAM's decision for identity-based policies, pure: a policy document, an action, a resource, a context.

The subset the spotrun policies (`spotrun.access`) use, documented here so that a policy leaving it
is refused rather than misjudged:
- an applicable Deny wins, then an applicable Allow, else the request is implicitly denied. A
  statement applies when its Action/NotAction (globs, case-insensitive), its Resource/NotResource
  (globs, case-sensitive) and all its Conditions match;
- policy variables `${key}` (and the escapes `${*}`, `${?}`, `${$}`) take the value of a
  single-valued condition key, matched literally. Without a value a variable matches nothing: the
  Resource or condition using it is false; in NotResource it makes an Allow inapplicable and a
  Deny applicable (it never widens access);
- operators: String(Not)Equals, String(Not)EqualsIgnoreCase, String(Not)Like, Arn(Not)Equals,
  Arn(Not)Like, Bool, Null, with ...IfExists and ForAllValues:/ForAnyValue:. Against a missing key a
  plain operator is false and a Not... one true; ForAllValues over a missing or empty set is true,
  as in IAM (pair it with Null), ForAnyValue false. Numeric, Date, IpAddress and Binary operators
  are not supported: `check_supported` refuses a policy using one;
- condition keys are whatever the caller puts in the context (keys compare case-insensitively); a
  key not there is missing. `spotrun_local.iam_guard` says which keys it supplies.
Not modelled: resource-based policies, boundaries, session policies, SCPs, transitive tags, expiry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Context = dict[str, list[str]]  # condition key (lower case) -> its values


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # worded to follow "User: ... is not authorized to perform: ... on resource: ..."


_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_STRING_OPERATORS = {  # operator -> (wildcards, ignore case, negated)
    "StringEquals": (False, False, False), "StringNotEquals": (False, False, True),
    "StringEqualsIgnoreCase": (False, True, False), "StringNotEqualsIgnoreCase": (False, True, True),
    "StringLike": (True, False, False), "StringNotLike": (True, False, True),
    "ArnEquals": (True, False, False), "ArnLike": (True, False, False),  # both match globs in IAM
    "ArnNotEquals": (True, False, True), "ArnNotLike": (True, False, True),
    "Bool": (False, True, False),
}


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str | bool):
        value = [value]
    return [str(item).lower() if isinstance(item, bool) else str(item) for item in value]


def _statements(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def check_supported(policy: Mapping[str, Any]) -> None:
    """Raises ValueError for a condition operator this evaluator would get wrong."""
    for statement in _statements(policy):
        for operator in statement.get("Condition", {}):
            qualifier, _, name = operator.rpartition(":")
            if qualifier not in ("", "ForAllValues", "ForAnyValue") or \
                    name.removesuffix("IfExists") not in {*_STRING_OPERATORS, "Null"}:
                raise ValueError(f"the local IAM guard does not support the condition operator {operator}")


def _resolve(variable: str, context: Context) -> str | None:
    if variable in ("*", "?", "$"):
        return variable
    values = context.get(variable.lower(), [])
    return values[0] if len(values) == 1 else None


def _compile(pattern: str, context: Context, *, wildcards: bool, ignore_case: bool) -> re.Pattern[str] | None:
    """The pattern as a regex with its variables filled in, or None when one has no value."""

    def text(part: str) -> str:
        if not wildcards:
            return re.escape(part)
        return "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in part)

    parts: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(pattern):
        value = _resolve(match.group(1), context)
        if value is None:
            return None
        parts += [text(pattern[position:match.start()]), re.escape(value)]  # a value is never a wildcard
        position = match.end()
    parts.append(text(pattern[position:]))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _matches(patterns: Any, value: str, context: Context, *, ignore_case: bool) -> bool | None:
    """Whether a pattern matches the value; None when none does but one could not be resolved."""
    unresolved = False
    for pattern in _as_list(patterns):
        regex = _compile(pattern, context, wildcards=True, ignore_case=ignore_case)
        if regex is None:
            unresolved = True
        elif regex.fullmatch(value):
            return True
    return None if unresolved else False


def _condition_holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    qualifier, _, name = operator.rpartition(":")
    if_exists, name = name.endswith("IfExists"), name.removesuffix("IfExists")
    values = context.get(key.lower(), [])
    if name == "Null":  # "true": the key must be missing; "false": it must be present
        return str(not values).lower() in (value.lower() for value in _as_list(expected))
    wildcards, ignore_case, negated = _STRING_OPERATORS[name]
    compiled = [_compile(value, context, wildcards=wildcards, ignore_case=ignore_case) for value in _as_list(expected)]
    patterns = [pattern for pattern in compiled if pattern is not None]
    if len(patterns) < len(compiled):
        return False  # a policy variable without a value makes the condition false
    if not values:
        if if_exists:
            return True
        return {"ForAllValues": True, "ForAnyValue": False}.get(qualifier, negated)

    def passes(value: str) -> bool:
        return any(pattern.fullmatch(value) for pattern in patterns) != negated

    if qualifier == "ForAnyValue":
        return any(map(passes, values))
    if qualifier == "ForAllValues" or negated:  # a Not... operator must hold for every value
        return all(map(passes, values))
    return any(map(passes, values))


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    deny = statement.get("Effect") == "Deny"
    for positive, negative, value, ignore_case in (("Action", "NotAction", action, True),
                                                   ("Resource", "NotResource", resource, False)):
        if positive in statement:
            if not _matches(statement[positive], value, context, ignore_case=ignore_case):
                return False
        elif negative in statement:
            matched = _matches(statement[negative], value, context, ignore_case=ignore_case)
            if matched or (matched is None and not deny):  # an unresolved exclusion never widens access
                return False
        else:
            return False
    return all(_condition_holds(operator, key, expected, context)
               for operator, entries in statement.get("Condition", {}).items()
               for key, expected in entries.items())


def evaluate(policy: Mapping[str, Any], action: str, resource: str,
             context: Mapping[str, Sequence[str] | str] | None = None) -> Decision:
    """IAM's decision (the subset in the module docstring) for one action on one resource."""
    normalized = {key.lower(): _as_list(values) for key, values in (context or {}).items()}
    allowed_by: str | None = None
    for number, statement in enumerate(_statements(policy)):
        if not _applies(statement, action, resource, normalized):
            continue
        name = statement.get("Sid") or f"#{number}"
        if statement.get("Effect") == "Deny":
            return Decision(False, f"with an explicit deny in an identity-based policy (statement {name})")
        if statement.get("Effect") == "Allow":
            allowed_by = allowed_by or name
    if allowed_by:
        return Decision(True, f"allowed by statement {allowed_by}")
    return Decision(False, f"because no identity-based policy allows the {action} action")


def uses_resource_tags(policy: Mapping[str, Any]) -> bool:
    """Whether the policy looks at aws:ResourceTag/... (only then are a resource's tags worth fetching)."""
    return "aws:resourcetag/" in json.dumps(policy).lower()
