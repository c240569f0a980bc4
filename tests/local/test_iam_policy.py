"""The pure IAM evaluator (`spotrun_local.iam_policy`) as a table: one statement or policy, one question,
IAM's answer. Each row is a rule of the subset its docstring documents."""

from __future__ import annotations

from typing import Any

import pytest

from spotrun_local.iam_policy import check_supported, evaluate, uses_resource_tags

ARN = "arn:aws:s3:::bucket/jobs/j-1/3/out.json"


def allow(**statement: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


CASES = [
    # (what the row shows, policy, action, resource, context, allowed)
    ("no statement applies: implicit deny", allow(Action="s3:PutObject", Resource="*"), "s3:GetObject", ARN, {}, False),
    ("a single statement (not a list) counts",
     {"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}}, "s3:GetObject", ARN, {}, True),
    ("actions match case-insensitively", allow(Action="S3:getobject", Resource="*"), "s3:GetObject", ARN, {}, True),
    ("action globs: * and ?", allow(Action="s3:Get?bj*", Resource="*"), "s3:GetObjectVersion", ARN, {}, True),
    ("resources match case-sensitively", allow(Action="*", Resource=ARN.upper()), "s3:GetObject", ARN, {}, False),
    ("resource glob", allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/*"), "s3:GetObject", ARN, {}, True),
    ("a statement without Resource applies to nothing", allow(Action="*"), "s3:GetObject", ARN, {}, False),
    ("NotAction: everything else", allow(NotAction="s3:Delete*", Resource="*"), "s3:GetObject", ARN, {}, True),
    ("NotAction: not that", allow(NotAction="s3:Delete*", Resource="*"), "s3:DeleteObject", ARN, {}, False),
    ("NotResource: everything else", allow(Action="*", NotResource="arn:aws:s3:::other/*"),
     "s3:GetObject", ARN, {}, True),
    ("an explicit Deny wins over an Allow",
     policy({"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": ARN}), "s3:GetObject", ARN, {}, False),
    ("a Deny that does not apply denies nothing",
     policy({"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": ARN}), "s3:GetObject", ARN, {}, True),
    ("a variable takes its key's value",
     allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/${aws:PrincipalTag/job}/*"),
     "s3:GetObject", ARN, {"aws:PrincipalTag/job": "j-1"}, True),
    ("condition keys compare case-insensitively",
     allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/${aws:principaltag/JOB}/*"),
     "s3:GetObject", ARN, {"aws:PrincipalTag/job": "j-1"}, True),
    ("a variable's value is literal, never a glob",
     allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/${aws:PrincipalTag/job}/*"),
     "s3:GetObject", ARN, {"aws:PrincipalTag/job": "*"}, False),
    ("a variable without a value matches nothing",
     allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/${aws:PrincipalTag/job}/*"), "s3:GetObject", ARN, {}, False),
    ("a multi-valued key gives a variable no value",
     allow(Action="*", Resource="arn:aws:s3:::bucket/jobs/${aws:PrincipalTag/job}/*"),
     "s3:GetObject", ARN, {"aws:PrincipalTag/job": ["j-1", "j-2"]}, False),
    ("escapes ${*} ${?} ${$} are the characters themselves",
     allow(Action="*", Resource="arn:aws:s3:::bucket/${*}${?}${$}"), "s3:GetObject", "arn:aws:s3:::bucket/*?$", {},
     True),
    ("an unresolved NotResource makes an Allow inapplicable",
     allow(Action="*", NotResource="arn:aws:s3:::${aws:PrincipalTag/other}/*"), "s3:GetObject", ARN, {}, False),
    ("an unresolved NotResource makes a Deny applicable",
     policy({"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "NotResource": "arn:aws:s3:::${aws:PrincipalTag/other}/*"}),
     "s3:GetObject", ARN, {}, False),
    ("StringEquals", allow(Action="*", Resource="*", Condition={"StringEquals": {"k": "a"}}), "x:Y", "*", {"k": "a"},
     True),
    ("StringEquals is case-sensitive",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"k": "a"}}), "x:Y", "*", {"k": "A"}, False),
    ("StringEquals takes no glob",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"k": "a*"}}), "x:Y", "*", {"k": "ab"}, False),
    ("StringEquals against a missing key is false",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"k": "a"}}), "x:Y", "*", {}, False),
    ("StringNotEquals against a missing key is true",
     allow(Action="*", Resource="*", Condition={"StringNotEquals": {"k": "a"}}), "x:Y", "*", {}, True),
    ("StringNotEquals must hold for every value",
     allow(Action="*", Resource="*", Condition={"StringNotEquals": {"k": "a"}}), "x:Y", "*", {"k": ["b", "a"]},
     False),
    ("StringEqualsIgnoreCase",
     allow(Action="*", Resource="*", Condition={"StringEqualsIgnoreCase": {"k": "abc"}}), "x:Y", "*", {"k": "AbC"},
     True),
    ("StringNotEqualsIgnoreCase",
     allow(Action="*", Resource="*", Condition={"StringNotEqualsIgnoreCase": {"k": "abc"}}), "x:Y", "*",
     {"k": "ABC"}, False),
    ("StringLike globs", allow(Action="*", Resource="*", Condition={"StringLike": {"k": "a*c?"}}), "x:Y", "*",
     {"k": "abbcd"}, True),
    ("StringNotLike", allow(Action="*", Resource="*", Condition={"StringNotLike": {"k": "a*"}}), "x:Y", "*",
     {"k": "abc"}, False),
    ("one of several expected values suffices",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"k": ["a", "b"]}}), "x:Y", "*", {"k": "b"}, True),
    ("every condition key must hold",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"k": "a", "l": "b"}}), "x:Y", "*",
     {"k": "a", "l": "c"}, False),
    ("ArnEquals globs as ArnLike does",
     allow(Action="*", Resource="*", Condition={"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/*"}}),
     "x:Y", "*", {"aws:PrincipalArn": "arn:aws:iam::1:role/task"}, True),
    ("ArnNotLike",
     allow(Action="*", Resource="*", Condition={"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::1:role/*"}}),
     "x:Y", "*", {"aws:PrincipalArn": "arn:aws:iam::1:role/task"}, False),
    ("Bool compares true/false case-insensitively",
     allow(Action="*", Resource="*", Condition={"Bool": {"aws:SecureTransport": True}}), "x:Y", "*",
     {"aws:SecureTransport": "TRUE"}, True),
    ("Null true: the key must be missing",
     allow(Action="*", Resource="*", Condition={"Null": {"k": "true"}}), "x:Y", "*", {}, True),
    ("Null false: the key must be present",
     allow(Action="*", Resource="*", Condition={"Null": {"k": "false"}}), "x:Y", "*", {}, False),
    ("...IfExists holds when the key is missing",
     allow(Action="*", Resource="*", Condition={"StringEqualsIfExists": {"k": "a"}}), "x:Y", "*", {}, True),
    ("...IfExists still checks a present key",
     allow(Action="*", Resource="*", Condition={"StringEqualsIfExists": {"k": "a"}}), "x:Y", "*", {"k": "b"}, False),
    ("ForAllValues: every value must match",
     allow(Action="*", Resource="*", Condition={"ForAllValues:StringLike": {"k": "TASK#j-1#*"}}), "x:Y", "*",
     {"k": ["TASK#j-1#3", "TASK#j-2#3"]}, False),
    ("ForAllValues over an empty set holds (pair it with Null)",
     allow(Action="*", Resource="*", Condition={"ForAllValues:StringEquals": {"k": "a"}}), "x:Y", "*", {"k": []}, True),
    ("ForAnyValue: one value suffices",
     allow(Action="*", Resource="*", Condition={"ForAnyValue:StringEquals": {"k": "a"}}), "x:Y", "*",
     {"k": ["b", "a"]}, True),
    ("ForAnyValue over a missing key fails",
     allow(Action="*", Resource="*", Condition={"ForAnyValue:StringEquals": {"k": "a"}}), "x:Y", "*", {}, False),
    ("a variable in a condition value",
     allow(Action="*", Resource="*", Condition={"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}), "x:Y", "*",
     {"aws:ARN": "arn:i-1", "ec2:SourceInstanceARN": "arn:i-1"}, True),
    ("a condition whose variable has no value is false",
     allow(Action="*", Resource="*", Condition={"StringNotEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}),
     "x:Y", "*", {"aws:ARN": "arn:i-1"}, False),
]


@pytest.mark.parametrize(("policy_document", "action", "resource", "context", "allowed"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_evaluation(policy_document, action, resource, context, allowed):
    check_supported(policy_document)
    decision = evaluate(policy_document, action, resource, context)
    assert decision.allowed is allowed, decision.reason


def test_the_reason_names_the_deciding_statement():
    document = policy({"Sid": "Reads", "Effect": "Allow", "Action": "*", "Resource": "*"},
                      {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"})
    assert evaluate(document, "s3:GetObject", ARN).reason == "allowed by statement Reads"
    assert evaluate(document, "s3:DeleteObject", ARN).reason == \
        "with an explicit deny in an identity-based policy (statement #1)"
    assert evaluate(allow(Action="s3:GetObject", Resource="*"), "s3:PutObject", ARN).reason == \
        "because no identity-based policy allows the s3:PutObject action"


@pytest.mark.parametrize("operator", ["NumericLessThan", "DateGreaterThan", "IpAddress", "BinaryEquals",
                                      "ForSomeValues:StringEquals", "StringEqualsIfExist"])
def test_operators_outside_the_subset_are_refused(operator):
    with pytest.raises(ValueError, match=operator):
        check_supported(allow(Action="*", Resource="*", Condition={operator: {"k": "1"}}))


@pytest.mark.parametrize(("document", "uses"), [
    (allow(Action="*", Resource="*", Condition={"StringEquals": {"aws:ResourceTag/spotrun:managed": "true"}}), True),
    (allow(Action="*", Resource="*", Condition={"StringEquals": {"aws:resourcetag/x": "y"}}), True),
    (allow(Action="*", Resource="*", Condition={"StringEquals": {"aws:PrincipalTag/job": "y"}}), False),
])
def test_only_policies_reading_resource_tags_need_them(document, uses):
    assert uses_resource_tags(document) is uses
