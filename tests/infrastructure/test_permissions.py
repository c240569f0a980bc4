"""Least privilege: each role can do what its FunctionDef.grants (or the agent) need, and no more."""

from __future__ import annotations

import json
import re

import pytest
import template_query
from template_query import StackTemplate, Statement

from spotrun import resources
from spotrun.resources import EnvVar

pytestmark = pytest.mark.slow  # reads the synthesized stack

MANAGED_CONDITION = {"StringEquals": {"aws:ResourceTag/spotrun:managed": "true"}}
LAUNCH_TAG_CONDITION = {"StringEquals": {"aws:RequestTag/spotrun:managed": "true"}}


def _allowed(statements: list[Statement]) -> set[str]:
    return {action for s in statements if s.effect == "Allow" for action in s.actions}


def _functions_with(grant: str) -> list[str]:
    return [f.key for f in resources.FUNCTIONS if grant in f.grants]


def _functions_without(grant: str) -> list[str]:
    return [f.key for f in resources.FUNCTIONS if grant not in f.grants]


def test_no_role_has_a_service_wide_or_global_action(query: StackTemplate) -> None:
    for role_id in query.of_type("AWS::IAM::Role"):
        for statement in query.statements_of_role(role_id):
            for action in statement.actions:
                assert action != "*" and not action.endswith(":*"), (role_id, action)


def test_function_roles_use_no_managed_policies(query: StackTemplate) -> None:
    for key in query.functions():
        assert query.managed_policies_of_role(query.role_of_function(key)) == [], key


@pytest.mark.parametrize("key", _functions_without("ec2:launch"))
def test_functions_without_the_launch_grant_cannot_launch_or_pass_roles(query: StackTemplate, key: str) -> None:
    actions = _allowed(query.function_statements(key))
    assert not actions & {"ec2:RunInstances", "ec2:CreateTags", "iam:PassRole", "iam:CreateServiceLinkedRole"}, key


@pytest.mark.parametrize("key", _functions_with("ec2:launch"))
def test_launching_requires_the_managed_tag_and_spotruns_network(query: StackTemplate, key: str) -> None:
    statements = [s for s in query.function_statements(key) if s.allows("ec2:RunInstances")]
    assert statements, f"{key} cannot launch"
    for statement in statements:
        assert "*" not in statement.resources, "RunInstances on '*'"
        creates_instances = [r for r in statement.resources if r.endswith(":instance/*") or r.endswith(":volume/*")]
        if creates_instances:
            assert statement.condition == LAUNCH_TAG_CONDITION, statement
        subnets = [r for r in statement.resources if ":subnet/" in r]
        assert all(not r.endswith("/*") for r in subnets), "only spotrun's own subnets"
        assert not any(":security-group/*" in r for r in statement.resources), "only spotrun's security group"
    tags = [s for s in query.function_statements(key) if s.allows("ec2:CreateTags")]
    assert tags
    for statement in tags:  # at launch only, or on instances that are already spotrun's, spotrun: keys only
        assert statement.condition in (
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            {**MANAGED_CONDITION, "ForAllValues:StringLike": {"aws:TagKeys": ["spotrun:*"]}},
        ), statement


@pytest.mark.parametrize("key", _functions_with("ec2:launch"))
def test_launchers_may_pass_only_the_worker_role_to_ec2(query: StackTemplate, key: str) -> None:
    worker_role = _worker_role(query)
    passes = [s for s in query.function_statements(key) if s.allows("iam:PassRole")]
    assert passes
    for statement in passes:
        assert statement.resources == (f"${{{worker_role}.Arn}}",)
        assert statement.condition == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


@pytest.mark.parametrize("key", [f.key for f in resources.FUNCTIONS])
def test_terminating_is_limited_to_managed_instances_and_to_the_grant(query: StackTemplate, key: str) -> None:
    statements = [s for s in query.function_statements(key) if s.allows("ec2:TerminateInstances")]
    if "ec2:terminate" not in resources.function(key).grants:
        assert statements == [], key
        return
    assert statements, key
    for statement in statements:
        assert all(r.endswith(":instance/*") for r in statement.resources)
        assert statement.condition == MANAGED_CONDITION


def test_api_presigns_and_lists_only_uploads_and_job_files(query: StackTemplate) -> None:
    statements = query.function_statements("api")
    objects = [s for s in statements if any(a.startswith("s3:") and a != "s3:ListBucket" for a in s.actions)]
    assert _allowed(objects) == {"s3:GetObject", "s3:PutObject"}
    assert all(r.endswith(("/uploads/*", "/jobs/*")) for s in objects for r in s.resources)
    listing = [s for s in statements if s.allows("s3:ListBucket")]
    assert listing and all(s.condition == {"StringLike": {"s3:prefix": ["uploads/*", "jobs/*"]}} for s in listing)


@pytest.mark.parametrize("key", [f.key for f in resources.FUNCTIONS])
def test_sns_publish_matches_topic_grants(query: StackTemplate, key: str) -> None:
    topics = {
        t["Properties"]["DisplayName"].removeprefix("spotrun "): lid
        for lid, t in query.of_type("AWS::SNS::Topic").items()
    }
    granted = {g.split(":")[1] for g in resources.function(key).grants if g.startswith("topic:")}
    published = {r for s in query.function_statements(key) if s.allows("sns:Publish") for r in s.resources}
    assert published == {f"${{{topics[name]}}}" for name in granted}


def _worker_role(query: StackTemplate) -> str:
    """The role of the instance profile the workers' launch template names."""
    [template] = query.of_type("AWS::EC2::LaunchTemplate").values()
    profile = template["Properties"]["LaunchTemplateData"]["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]
    [role] = query.template["Resources"][profile]["Properties"]["Roles"]
    return role["Ref"]


def _task_role(query: StackTemplate) -> str:
    roles = [lid for lid, r in query.of_type("AWS::IAM::Role").items() if lid.startswith("FunctionsTaskRole")]
    assert len(roles) == 1
    return roles[0]


def test_the_instance_role_reaches_no_task_data(query: StackTemplate) -> None:
    """A program on the instance can read the instance role's credentials from the metadata service:
    they reach no table, bucket prefix or queue, only the worker routes and the instance itself."""
    statements = query.statements_of_role(_worker_role(query))
    actions = _allowed(statements)
    assert not {a for a in actions if a.startswith(("dynamodb:", "sqs:", "sns:", "iam:", "kms:", "sts:"))}, actions
    assert {a for a in actions if a.startswith("ec2:")} == {"ec2:TerminateInstances"}
    objects = [(s, r) for s in statements if any(a.startswith("s3:") for a in s.actions) for r in s.resources]
    assert objects and all("cdk-hnb659fds-assets" in r and r.endswith(".zip") and s.actions == ("s3:GetObject",)
                           for s, r in objects), objects  # only the agent's own code bundles, read at boot
    assert not [s for s in statements if any(a.startswith("execute-api:") for a in s.actions)]
    invokes = [s for s in statements if any(a.startswith("lambda:") for a in s.actions)]
    [url] = query.of_type("AWS::Lambda::Url")
    assert {(s.actions, s.resources) for s in invokes} == {
        (("lambda:InvokeFunctionUrl",), (f"${{{url}.FunctionArn}}",)),
        (("lambda:InvokeFunction",), (f"${{{url}.FunctionArn}}",)),
    }


def _instance_role_document(query: StackTemplate, arns: dict[str, str]) -> dict:
    """The instance role's statements as one policy document, its deploy-time ARNs given sample values."""
    statements = []
    for statement in query.statements_of_role(_worker_role(query)):
        resources_ = [arns.get(r, r) for r in statement.resources]
        statements.append({"Effect": statement.effect, "Action": list(statement.actions), "Resource": resources_,
                           **({"Condition": statement.condition} if statement.condition else {})})
    return {"Version": "2012-10-17", "Statement": statements}


def test_the_instance_role_invokes_the_worker_api_only_through_its_url(query: StackTemplate) -> None:
    """Lambda asks both InvokeFunctionUrl (auth type AWS_IAM) and InvokeFunction (via the URL) for a call through
    the URL. A direct Invoke carries no lambda:InvokedViaFunctionUrl: were it allowed, a program on the instance
    could hand the function a made-up URL event naming another instance as its signer."""
    from spotrun.access import FUNCTION_URL_CALL
    from spotrun_local.iam_policy import evaluate

    [url] = query.of_type("AWS::Lambda::Url")
    worker_api = "arn:aws:lambda:eu-west-1:123456789012:function:Spotrun-worker-api"
    policy = _instance_role_document(query, {f"${{{url}.FunctionArn}}": worker_api})
    through_url = dict(FUNCTION_URL_CALL)
    assert through_url == {"lambda:InvokeFunctionUrl": {"lambda:FunctionUrlAuthType": "AWS_IAM"},
                           "lambda:InvokeFunction": {"lambda:InvokedViaFunctionUrl": "true"}}
    for action, context in through_url.items():
        assert evaluate(policy, action, worker_api, context).allowed, action
    # A forged direct invoke (no URL: the key is absent, or false), or the URL of any other function: denied.
    assert not evaluate(policy, "lambda:InvokeFunction", worker_api).allowed
    assert not evaluate(policy, "lambda:InvokeFunction", worker_api, {"lambda:InvokedViaFunctionUrl": "false"}).allowed
    assert not evaluate(policy, "lambda:InvokeFunctionUrl", worker_api, {"lambda:FunctionUrlAuthType": "NONE"}).allowed
    other = "arn:aws:lambda:eu-west-1:123456789012:function:Spotrun-api"
    for action, context in through_url.items():
        assert not evaluate(policy, action, other, context).allowed, action
        assert not evaluate(policy, action, f"{worker_api}:live", context).allowed, action
    for action in ("lambda:InvokeAsync", "lambda:GetFunction", "lambda:UpdateFunctionCode"):
        assert not evaluate(policy, action, worker_api, {}).allowed, action


def test_only_the_worker_api_function_opens_tagged_task_sessions(query: StackTemplate) -> None:
    task_role = _task_role(query)
    trust = query.props(task_role)["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1 and set(trust[0]["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    assert trust[0]["Principal"] == {"AWS": {"Fn::GetAtt": [query.role_of_function("worker-api"), "Arn"]}}
    assert query.props(task_role)["MaxSessionDuration"] == 3600
    for key in (f.key for f in resources.FUNCTIONS):
        assumes = [s for s in query.function_statements(key) if s.allows("sts:AssumeRole")]
        if key == "worker-api":
            assert [r for s in assumes for r in s.resources] == [f"${{{task_role}.Arn}}"]
            assert all(s.allows("sts:TagSession") for s in assumes)
        else:
            assert not assumes, key


def test_a_task_session_reaches_only_its_own_items_files_and_the_worker_queues(query: StackTemplate) -> None:
    queues = query.queues()
    statements = query.statements_of_role(_task_role(query))
    actions = _allowed(statements)
    assert {a for a in actions if a.startswith("dynamodb:")} == {"dynamodb:GetItem", "dynamodb:Query",
                                                                 "dynamodb:UpdateItem"}
    own_task = ["TASK#${aws:PrincipalTag/job}#${aws:PrincipalTag/task_key}"]
    for statement in (s for s in statements if any(a.startswith("dynamodb:") for a in s.actions)):
        assert not any("/index/" in r for r in statement.resources), "no index: they list other tasks"
        if statement.actions == ("dynamodb:UpdateItem",):  # the agent's beat: its own task's `beat` only
            assert statement.condition == {
                "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": own_task,
                                              "dynamodb:Attributes": ["pk", "sk", "beat"]},
                "Null": {"dynamodb:LeadingKeys": "false", "dynamodb:Attributes": "false"},
                "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
            }
        else:
            assert sorted(statement.actions) == ["dynamodb:GetItem", "dynamodb:Query"]
            assert statement.condition == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": own_task},
                                           "Null": {"dynamodb:LeadingKeys": "false"}}
    assert {a for a in actions if a.startswith("sqs:")} == {"sqs:SendMessage"}
    sends = {r for s in statements if s.allows("sqs:SendMessage") for r in s.resources}
    assert sends == {f"${{{queues['reports']}.Arn}}"}
    assert not {a for a in actions if a.startswith(("ec2:", "iam:", "sns:", "sts:", "kms:"))}
    assert {a for a in actions if a.startswith("logs:")} == {"logs:PutLogEvents"}  # not even CreateLogStream
    writes = {r for s in statements if s.allows("logs:PutLogEvents") for r in s.resources}
    assert writes == {f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:${{{_task_logs(query)}}}"
                      ":log-stream:${aws:PrincipalTag/job}/${aws:PrincipalTag/task}/*"}
    own = "${aws:PrincipalTag/job}/${aws:PrincipalTag/task}/*"
    for statement in statements:
        for action in statement.actions:
            if not action.startswith("s3:") or action == "s3:ListBucket":
                continue
            for resource in statement.resources:
                suffix = resource.split("}", 1)[1]  # after the bucket's ARN
                if action == "s3:GetObject" and suffix == "/uploads/*":
                    continue  # inputs uploaded through the API: read only
                if suffix == "/jobs/${aws:PrincipalTag/job}/outputs/*":
                    assert action == "s3:GetObject" and statement.condition == {
                        "StringEquals": {"aws:PrincipalTag/kind": "combine"}}, "only the combine step reads its job's outputs"
                    continue
                assert suffix in (f"/checkpoints/{own}", "/jobs/${aws:PrincipalTag/job}/outputs/${aws:PrincipalTag/task}/*",
                                  "/jobs/${aws:PrincipalTag/job}/logs/${aws:PrincipalTag/task}/*"), (action, resource)
                if action in ("s3:GetObject", "s3:DeleteObject"):
                    assert suffix == f"/checkpoints/{own}", (action, resource)
    listing = {json.dumps(s.condition, sort_keys=True) for s in statements if s.allows("s3:ListBucket")}
    assert listing == {
        json.dumps({"StringLike": {"s3:prefix": [f"checkpoints/{own}"]}}, sort_keys=True),
        json.dumps({"StringLike": {"s3:prefix": ["jobs/${aws:PrincipalTag/job}/outputs/*"]},
                    "StringEquals": {"aws:PrincipalTag/kind": "combine"}}, sort_keys=True),
    }


def test_the_deployed_task_policy_is_spotrun_access_task_policy(query: StackTemplate) -> None:
    """The local runtime enforces spotrun.access.task_policy on its agents: the stack must deploy the same."""
    from spotrun.access import task_policy

    expected = task_policy(table_arn="TABLE", bucket_arn="BUCKET", queue_arns=["Q1", "Q2"], log_group_arn="LOGS")["Statement"]
    deployed = query.statements_of_role(_task_role(query))
    assert [(s.sid, sorted(s.actions), s.condition) for s in deployed] == [
        (e["Sid"], sorted(e["Action"]), e.get("Condition", {})) for e in expected]


def test_workers_accept_messages_only_from_their_attempts_session(query: StackTemplate) -> None:
    task_role = _task_role(query)
    variables = query.props(query.functions()["finisher"])["Environment"]["Variables"]
    assert variables[EnvVar.TASK_ROLE_ID] == {"Fn::GetAtt": [task_role, "RoleId"]}
    worker_api_env = query.props(query.functions()["worker-api"])["Environment"]["Variables"]
    assert worker_api_env[EnvVar.TASK_ROLE_ARN] == {"Fn::GetAtt": [task_role, "Arn"]}
    assert worker_api_env[EnvVar.INSTANCE_ROLE_NAME] == {"Ref": _worker_role(query)}


def test_worker_role_uses_session_manager_and_nothing_else_managed(query: StackTemplate) -> None:
    managed = query.managed_policies_of_role(_worker_role(query))
    assert managed == ["arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"]


def test_a_worker_can_terminate_only_its_own_managed_instance(query: StackTemplate) -> None:
    terminations = [s for s in query.statements_of_role(_worker_role(query)) if s.allows("ec2:TerminateInstances")]
    assert terminations
    for statement in terminations:
        assert all(r.endswith(":instance/*") for r in statement.resources)
        assert statement.condition == {
            "StringEquals": {**MANAGED_CONDITION["StringEquals"], "aws:ARN": "${ec2:SourceInstanceARN}"}
        }


def test_iam_conditions_use_the_tag_the_control_plane_launches_with() -> None:
    from spotrun.adapters.ec2 import MANAGED_TAG
    from stacks.constructs.fleet import MANAGED_TAG_KEY

    assert MANAGED_TAG == MANAGED_TAG_KEY


def _user_policy(query: StackTemplate, key: str) -> dict:
    """The stack's managed policy for API users (`users` or `readers`), its ARNs with sample values."""
    [(logical_id, policy)] = [(k, v) for k, v in query.of_type("AWS::IAM::ManagedPolicy").items()
                              if k.startswith(f"Api{key.title()}Policy")]
    text = template_query.render(policy["Properties"]["PolicyDocument"]["Statement"][0]["Resource"])
    samples = {"${AWS::Partition}": "aws", "${AWS::Region}": "eu-west-1", "${AWS::AccountId}": "123456789012"}
    for placeholder, value in samples.items():
        text = text.replace(placeholder, value)
    text = re.sub(r"\$\{ApiRestApi[0-9A-F]+\}", "a1b2c3", text)
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke",
                                                     "Resource": text.split(",")}]}


def _user_routes() -> list[tuple[str, str]]:
    """Every route of the API function (its OpenAPI document, plus the document itself), with sample ids."""
    from spotrun.handlers import api

    routes = [("GET", "/openapi.json")]
    for path, operations in api.app.get_openapi_schema().paths.items():
        for method in ("get", "post", "put", "delete", "patch"):
            if getattr(operations, method, None) is not None:
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "x7", path)))
    return routes


def test_the_user_policy_the_stack_outputs_reaches_every_user_route_and_no_worker_route(query: StackTemplate) -> None:
    from spotrun_local.iam_policy import evaluate

    def may(policy: dict, method: str, path: str) -> bool:
        return evaluate(policy, "execute-api:Invoke", f"arn:aws:execute-api:eu-west-1:123456789012:a1b2c3/v1/{method}{path}").allowed

    users, readers = _user_policy(query, "users"), _user_policy(query, "readers")
    routes = _user_routes()
    assert ("POST", "/jobs") in routes and ("POST", "/jobs/x7/tasks/x7/cancel") in routes and len(routes) > 10
    for method, path in routes:
        assert may(users, method, path), f"the user policy does not allow {method} {path}"
        assert may(readers, method, path) == (method == "GET"), f"the reader policy and {method} {path}"
    for policy in (users, readers):
        assert not may(policy, "POST", "/worker/session") and not may(policy, "POST", "/worker/checkpoint")
        assert not evaluate(policy, "execute-api:Invoke", "arn:aws:execute-api:eu-west-1:123456789012:other/v1/GET/jobs").allowed
    outputs = query.template["Outputs"]
    assert {"UserPolicyArn", "ReaderPolicyArn"} <= set(outputs)


def test_only_the_functions_that_give_out_page_tokens_read_their_key(query: StackTemplate) -> None:
    """The API and the console (its jobs widget pages with the API's sealed tokens, `jobs.list_jobs`)."""
    secrets = query.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 1
    (secret_id, secret), = secrets.items()
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and "SecretString" not in secret["Properties"]  # never in the template
    readers = [key for key in query.functions()
               if any(s.allows("secretsmanager:GetSecretValue") for s in query.function_statements(key))]
    assert sorted(readers) == ["api", "console"] == sorted(_functions_with("secret:page-key:read"))
    for reader in readers:
        for statement in query.function_statements(reader):
            if statement.allows("secretsmanager:GetSecretValue"):
                assert list(statement.resources) == [f"${{{secret_id}}}"], statement.resources  # that secret only
    variables = query.of_type("AWS::Lambda::Function")
    holders = [lid for lid, r in variables.items()
               if EnvVar.PAGE_KEY_ARN in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(holders) == 2


def _task_logs(query: StackTemplate) -> str:
    [group] = [lid for lid in query.of_type("AWS::Logs::LogGroup") if lid.startswith("StateTaskLogs")]
    return group
