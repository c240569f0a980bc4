"""Properties of the state, messaging, API, workers and observability resources."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match
from template_query import StackTemplate, Synthesized, render

from spotrun import resources
from spotrun.resources import EnvVar

pytestmark = pytest.mark.slow  # reads the synthesized stack


def _single(query: StackTemplate, resource_type: str) -> dict:
    found = query.of_type(resource_type)
    assert len(found) == 1, resource_type
    return next(iter(found.values()))["Properties"]


def _data_bucket(query: StackTemplate) -> str:
    [logical_id] = [
        lid for lid, r in query.of_type("AWS::S3::Bucket").items() if "VersioningConfiguration" in r["Properties"]
    ]
    return logical_id


# --- state -------------------------------------------------------------------------------------


def test_table_has_the_keys_indexes_and_protection_of_resources_table(query: StackTemplate) -> None:
    table = _single(query, "AWS::DynamoDB::Table")
    definition = resources.TABLE
    assert table["KeySchema"] == [
        {"AttributeName": definition.partition_key, "KeyType": "HASH"},
        {"AttributeName": definition.sort_key, "KeyType": "RANGE"},
    ]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": definition.ttl_attribute, "Enabled": True}
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {i.name for i in definition.indexes}
    for index in definition.indexes:
        assert indexes[index.name]["KeySchema"] == [
            {"AttributeName": index.partition_key, "KeyType": "HASH"},
            {"AttributeName": index.sort_key, "KeyType": "RANGE"},
        ]
        # Keys only, so heartbeats and job counts write no index (the scale benchmark's cost goal).
        assert indexes[index.name]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert set(types.values()) == {"S"}


def test_buckets_block_public_access_encrypt_and_deny_plain_http(query: StackTemplate) -> None:
    buckets = query.of_type("AWS::S3::Bucket")
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], logical_id
    denied_plain_http = {
        render(s.resources[0]).removeprefix("${").split(".")[0]
        for _, s in query.policy_statements("AWS::S3::BucketPolicy")
        if s.effect == "Deny" and s.condition == {"Bool": {"aws:SecureTransport": "false"}} and "s3:*" in s.actions
    }
    assert denied_plain_http == set(buckets)


def test_data_bucket_expires_superseded_checkpoints_and_abandoned_uploads(query: StackTemplate) -> None:
    props = query.props(_data_bucket(query))
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    checkpoints = rules["expire-superseded-checkpoints"]
    assert checkpoints["Prefix"] == "checkpoints/"
    assert checkpoints["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    uploads = rules["abort-incomplete-uploads"]
    assert uploads["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in uploads
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"] in query.of_type("AWS::S3::Bucket")


# --- messaging ---------------------------------------------------------------------------------


def test_every_queue_is_encrypted_and_refuses_plain_http(query: StackTemplate) -> None:
    all_queues = query.of_type("AWS::SQS::Queue")
    for logical_id, queue in all_queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, logical_id
    ssl_only = {
        target
        for policy in query.of_type("AWS::SQS::QueuePolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for target in [q["Ref"] for q in policy["Properties"]["Queues"]]
    }
    assert ssl_only == set(all_queues)


def test_topics_are_kms_encrypted_and_ssl_only(query: StackTemplate) -> None:
    topics = query.of_type("AWS::SNS::Topic")
    for logical_id, topic in topics.items():
        assert "KmsMasterKeyId" in topic["Properties"], logical_id
    ssl_only = {
        topic["Ref"]
        for policy in query.of_type("AWS::SNS::TopicPolicy").values()
        if any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )
        for topic in policy["Properties"]["Topics"]
    }
    assert ssl_only == set(topics)
    key = _single(query, "AWS::KMS::Key")
    assert key["EnableKeyRotation"] is True


# --- functions ---------------------------------------------------------------------------------

REQUIRED_ENVIRONMENT = {
    EnvVar.TABLE,
    EnvVar.BUCKET,
    EnvVar.CONTROL_TOPIC_ARN,
    EnvVar.NOTIFY_TOPIC_ARN,
    EnvVar.REPORT_QUEUE_URL,
    EnvVar.SUBNETS,
    EnvVar.INSTANCE_TYPES,
    EnvVar.ACCOUNT_MAX_INSTANCES,
    EnvVar.POOL_MAX_INSTANCES,
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}


def test_functions_share_runtime_tracing_powertools_layer_and_environment(synthesized: Synthesized) -> None:
    query, config = synthesized.query, synthesized.stack.config
    for key, logical_id in query.functions().items():
        props = query.props(logical_id)
        assert props["Runtime"] == "python3.12", key
        assert props["Architectures"] == ["x86_64"], key
        traced = resources.function(key).traced
        assert props["TracingConfig"] == {"Mode": "Active" if traced else "PassThrough"}, key
        assert props["Layers"] == [
            {
                "Fn::Sub": "arn:aws:lambda:${AWS::Region}:017000801446:layer:"
                f"AWSLambdaPowertoolsPythonV3-python312-x86_64:{config.powertools_layer_version}"
            }
        ], key
        variables = props["Environment"]["Variables"]
        assert set(variables) >= REQUIRED_ENVIRONMENT, key
        assert variables["POWERTOOLS_SERVICE_NAME"] == "spotrun"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "spotrun"
        assert variables[EnvVar.ACCOUNT_MAX_INSTANCES] == str(config.account_max_instances)
        assert variables[EnvVar.POOL_MAX_INSTANCES] == str(config.pool_max_instances)
        # The launch template only where something launches (the template names the worker-api's URL: a
        # function naming the template would be a cycle for the worker-api, and needless for the rest).
        launches = "ec2:launch" in resources.function(key).grants
        assert (EnvVar.LAUNCH_TEMPLATE_ID in variables) == launches, key
        log_group = query.props(props["LoggingConfig"]["LogGroup"]["Ref"])
        assert log_group["RetentionInDays"] > 0, key


def test_subnets_variable_is_a_json_object_of_zone_to_subnet(query: StackTemplate) -> None:
    props = query.props(next(iter(query.functions().values())))
    rendered = render(props["Environment"]["Variables"][EnvVar.SUBNETS])
    subnets = query.of_type("AWS::EC2::Subnet")
    pairs = re.findall(r'"\$\{Select:(\d+):GetAZs\}":"\$\{(\w+)\}"', rendered)
    assert rendered.startswith("{") and rendered.endswith("}")
    assert {subnet for _, subnet in pairs} == set(subnets)
    for index, subnet in pairs:
        assert query.props(subnet)["AvailabilityZone"]["Fn::Select"][0] == int(index)


def test_each_zone_has_a_cluster_placement_group_named_to_the_launchers(query: StackTemplate) -> None:
    """`placement: cluster` gangs launch into their zone's group: one per subnet, named per zone in the
    functions' PLACEMENT_GROUPS, and the only placement groups RunInstances may use."""
    groups = query.of_type("AWS::EC2::PlacementGroup")
    subnets = query.of_type("AWS::EC2::Subnet")
    assert len(groups) == len(subnets) >= 2
    assert all(query.props(group)["Strategy"] == "cluster" for group in groups)
    props = query.props(next(iter(query.functions().values())))
    rendered = render(props["Environment"]["Variables"][EnvVar.PLACEMENT_GROUPS])
    pairs = dict(re.findall(r'"\$\{Select:(\d+):GetAZs\}":"\$\{(\w+)\}"', rendered))
    assert set(pairs.values()) == set(groups) and len(pairs) == len(groups)  # one group per zone
    launchers_naming_groups = 0
    for key in query.functions():
        for statement in query.function_statements(key):
            named = [r for r in statement.resources if ":placement-group/" in json.dumps(r)]
            if statement.allows("ec2:RunInstances") and named:
                launchers_naming_groups += 1
                assert sorted(g for r in named for g in groups if g in json.dumps(r)) == sorted(groups), (key, named)
    assert launchers_naming_groups >= 1


# --- api ---------------------------------------------------------------------------------------


def test_every_api_method_requires_iam_and_proxies_to_the_api_function(query: StackTemplate) -> None:
    """The REST API serves the users' routes only: the workers' calls go to the worker-api function's URL."""
    methods = query.of_type("AWS::ApiGateway::Method")
    assert methods
    api = query.functions()["api"]
    for logical_id, method in methods.items():
        props = method["Properties"]
        assert props["AuthorizationType"] == "AWS_IAM", logical_id
        assert props["Integration"]["Type"] == "AWS_PROXY", logical_id
        assert f"{{{api}.Arn}}" in render(props["Integration"]["Uri"]), logical_id
    assert sorted(method["Properties"]["HttpMethod"] for method in methods.values()) == ["ANY", "ANY"]
    paths = {render(r["Properties"]["PathPart"]) for r in query.of_type("AWS::ApiGateway::Resource").values()}
    assert paths == {"{proxy+}"}
    stage = _single(query, "AWS::ApiGateway::Stage")
    assert all("worker" not in setting.get("ResourcePath", "") for setting in stage["MethodSettings"])


def test_the_worker_routes_are_the_worker_api_functions_own_url_with_iam_auth(query: StackTemplate) -> None:
    """One function URL, AuthType AWS_IAM, on the worker-api function (the function resources declare as
    invoked by the worker routes); it is untraced (a trace per worker call would cost $5 per million), and
    its reserved concurrency stands in for the throttle a URL lacks."""
    urls = query.of_type("AWS::Lambda::Url")
    assert len(urls) == 1
    [url] = urls.values()
    [worker_routes] = [f.key for f in resources.FUNCTIONS if f.invoked_by == resources.WORKER_ROUTES]
    worker_api = query.functions()[worker_routes]
    assert url["Properties"] == {"AuthType": "AWS_IAM", "TargetFunctionArn": {"Fn::GetAtt": [worker_api, "Arn"]}}
    props = query.props(worker_api)
    assert props["TracingConfig"] == {"Mode": "PassThrough"}
    assert props["ReservedConcurrentExecutions"] == resources.WORKER_API_CONCURRENCY
    # No resource-based policy opens it wider: callers need their own identity-based grant (the instance role's).
    permissions = query.of_type("AWS::Lambda::Permission").values()
    assert not [p for p in permissions if json.dumps(p["Properties"]["FunctionName"]).count(worker_api)]


def test_api_stage_traces_and_writes_access_logs(query: StackTemplate) -> None:
    stage = _single(query, "AWS::ApiGateway::Stage")
    assert stage["TracingEnabled"] is True
    assert "DestinationArn" in stage["AccessLogSetting"] and stage["AccessLogSetting"]["Format"]
    assert stage["MethodSettings"][0]["LoggingLevel"] == "ERROR"
    assert stage["MethodSettings"][0]["DataTraceEnabled"] is False
    assert "CloudWatchRoleArn" in _single(query, "AWS::ApiGateway::Account")


# --- workers -----------------------------------------------------------------------------------


def _launch_data(query: StackTemplate) -> dict:
    return _single(query, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]


def test_launch_template_requires_imdsv2_and_encrypts_the_root_volume(synthesized: Synthesized) -> None:
    synthesized.template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {"MetadataOptions": Match.object_like({"HttpTokens": "required", "HttpPutResponseHopLimit": 2})}
            )
        },
    )
    query = synthesized.query
    data = _launch_data(query)
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])
    assert "InstanceMarketOptions" not in data, "spot options are set per launch by the scheduler"
    tagged = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in spec["Tags"]} for spec in data["TagSpecifications"]}
    assert tagged["instance"]["spotrun:managed"] == "true"
    assert tagged["volume"]["spotrun:managed"] == "true"
    # Workers boot the image the stack's Image Builder pipeline baked (tests/infrastructure/test_worker_image.py)
    [image] = query.of_type("AWS::ImageBuilder::Image")
    assert data["ImageId"] == {"Fn::GetAtt": [image, "ImageId"]}


SECRET_LOOKING = re.compile(
    r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET|AWS_SESSION_TOKEN|"
    r"password|passwd|secret|token=|-----BEGIN|api[_-]?key",
    re.IGNORECASE,
)


def test_user_data_writes_only_non_secret_wiring_and_starts_the_agent(query: StackTemplate) -> None:
    user_data = render(_launch_data(query)["UserData"])
    assert user_data.startswith("#!/bin/bash")
    assert not SECRET_LOOKING.search(user_data), SECRET_LOOKING.search(user_data)
    block = user_data.split("<<'SPOTRUN_ENV'\n", 1)[1].split("\nSPOTRUN_ENV\n", 1)[0]
    written = dict(line.split("=", 1) for line in block.splitlines())
    assert set(written) == {
        EnvVar.TABLE,
        EnvVar.BUCKET,
        EnvVar.REPORT_QUEUE_URL,
        EnvVar.WORKER_API_URL,
        EnvVar.TASK_LOG_GROUP,
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "SPOTRUN_DMTCP_BIN",
        EnvVar.IMAGE_CHECK,
    }
    assert written.pop("SPOTRUN_DMTCP_BIN") == "/opt/dmtcp/bin"
    assert written.pop(EnvVar.IMAGE_CHECK) == "/run/spotrun/image-check.json"
    # The worker routes: the worker-api function's URL.
    [url] = query.of_type("AWS::Lambda::Url")
    assert written.pop(EnvVar.WORKER_API_URL) == f"${{{url}.FunctionUrl}}"
    assert all(value.startswith("${") for value in written.values()), "only deploy-time references, no literals"
    assert "> /etc/spotrun/agent.env" in user_data
    # the agent's code comes from the stack's own assets, unpacked with the image's Python
    assert user_data.count("aws s3 cp 's3://") == 2 and "/opt/spotrun/lib/worker" in user_data
    assert "/opt/spotrun/venv/bin/python -m zipfile -e" in user_data and "-m spotrun_worker" in user_data


def test_a_worker_boots_without_compiling_or_installing_and_checks_its_image_first(query: StackTemplate) -> None:
    """DMTCP and Python come with the image: nothing is built or installed at boot (issue 10: the
    user data downloaded a tag that does not exist and built DMTCP at every boot)."""
    user_data = render(_launch_data(query)["UserData"])
    for word in ("dnf ", "yum ", "pip ", "gcc", "make ", "./configure", "curl ", "git ", "github.com"):
        assert word not in user_data, word
    check = user_data.index("/opt/spotrun/bin/spotrun-agent check-image --out /run/spotrun/image-check.json")
    assert check < user_data.index("systemctl enable --now spotrun-agent.service")
    # the check reads the agent's wiring (SPOTRUN_DMTCP_BIN) and a failed check still starts the agent,
    # which reports a method the image cannot run once, as the image's fault
    assert user_data.index("set -a; . /etc/spotrun/agent.env; set +a") < check
    assert user_data[check:].split("\n", 1)[0].count("|| echo") == 1


def test_workers_network_is_public_without_nat_with_flow_logs_and_gateway_endpoints(query: StackTemplate) -> None:
    assert query.of_type("AWS::EC2::NatGateway") == {}
    subnets = query.of_type("AWS::EC2::Subnet")
    assert subnets and all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())
    zones = sorted(s["Properties"]["AvailabilityZone"]["Fn::Select"][0] for s in subnets.values())
    assert zones == list(range(len(subnets)))
    vpc = next(iter(query.of_type("AWS::EC2::VPC")))
    flow_log = _single(query, "AWS::EC2::FlowLog")
    assert flow_log["ResourceId"] == {"Ref": vpc} and flow_log["TrafficType"] == "ALL"
    endpoints = {render(e["Properties"]["ServiceName"]) for e in query.of_type("AWS::EC2::VPCEndpoint").values()}
    assert {e.rsplit(".", 1)[-1] for e in endpoints} == {"s3", "dynamodb"}


def test_worker_security_group_has_no_ingress(query: StackTemplate) -> None:
    group = _single(query, "AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in group
    assert query.of_type("AWS::EC2::SecurityGroupIngress") == {}


# --- observability and outputs -----------------------------------------------------------------


def _alarms_on(query: StackTemplate, metric: str) -> list[dict]:
    return [
        a["Properties"]
        for a in query.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == metric
    ]


def _notifications_topic(query: StackTemplate) -> str:
    [topic] = [
        lid
        for lid, t in query.of_type("AWS::SNS::Topic").items()
        if t["Properties"]["DisplayName"] == "spotrun notifications"
    ]
    return topic


def _operations_topic(query: StackTemplate) -> str:
    [topic] = [lid for lid, t in query.of_type("AWS::SNS::Topic").items()
               if t["Properties"]["DisplayName"] == "spotrun operations"]
    return topic


def test_every_dead_letter_queue_alarms_on_any_visible_message(query: StackTemplate) -> None:
    alarms = _alarms_on(query, "ApproximateNumberOfMessagesVisible")
    watched = {
        render(d["Value"]).removeprefix("${").removesuffix(".QueueName}")
        for alarm in alarms
        for d in alarm["Dimensions"]
        if d["Name"] == "QueueName"
    }
    assert watched == set(query.dead_letter_queues().values())
    for alarm in alarms:
        assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["AlarmActions"] == [{"Ref": _operations_topic(query)}]


def test_every_function_alarms_on_errors(query: StackTemplate) -> None:
    alarms = _alarms_on(query, "Errors")
    watched = {d["Value"]["Ref"] for alarm in alarms for d in alarm["Dimensions"] if d["Name"] == "FunctionName"}
    assert watched == set(query.functions().values())
    assert all(a["AlarmActions"] == [{"Ref": _operations_topic(query)}] for a in alarms)


def test_dashboard_shows_queue_depth_and_handler_errors_and_duration(query: StackTemplate) -> None:
    body = render(_single(query, "AWS::CloudWatch::Dashboard")["DashboardBody"])
    for title in ("Queue depth", "Handler errors", "Handler duration", "Dead-letter queues"):
        assert title in body


def test_outputs_name_the_api_bucket_table_and_notifications_topic(query: StackTemplate) -> None:
    outputs = query.template["Outputs"]
    assert {"ApiUrl", "BucketName", "TableName", "NotificationsTopicArn"} <= set(outputs)
    assert outputs["BucketName"]["Value"] == {"Ref": _data_bucket(query)}
    assert outputs["NotificationsTopicArn"]["Value"] == {"Ref": _notifications_topic(query)}
    assert render(outputs["ApiUrl"]["Value"]).startswith("https://")
