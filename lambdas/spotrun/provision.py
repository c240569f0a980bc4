"""Create the control plane's resources from `spotrun.resources` against any AWS endpoint.

The local runtime and the integration tests use it against moto; the deployed stack is built
from the same declarations by CDK. Returns the environment the functions and agents read.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from spotrun import access, resources
from spotrun.resources import EnvVar

# The image moto's launch template names; the local metadata stand-in serves it as every instance's ami-id.
WORKER_IMAGE_ID = "ami-12c6146b"
# Local wiring only (no function reads it): the ARN the instance role's worker-route grant names.
WORKER_API_ARN = "SPOTRUN_WORKER_API_ARN"


def create_table(dynamodb: Any, name: str) -> None:
    table = resources.TABLE
    key_names = {table.partition_key, table.sort_key}
    for index in table.indexes:
        key_names |= {index.partition_key, index.sort_key}
    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in sorted(key_names)],
        KeySchema=[{"AttributeName": table.partition_key, "KeyType": "HASH"},
                   {"AttributeName": table.sort_key, "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {"IndexName": i.name, "Projection": {"ProjectionType": i.projection},
             "KeySchema": [{"AttributeName": i.partition_key, "KeyType": "HASH"},
                           {"AttributeName": i.sort_key, "KeyType": "RANGE"}]}
            for i in table.indexes
        ],
    )


def provision(session: Any, prefix: str = "spotrun", region: str = "us-east-1",
              zones: tuple[str, ...] = ("us-east-1a", "us-east-1b", "us-east-1c"),
              instance_types: tuple[str, ...] = ("c6i.large", "m6i.large")) -> dict[str, str]:
    """Build table, bucket, topics, queues (with DLQs), subscriptions, rules, the attempts' log group,
    network and launch template."""
    def client(name: str) -> Any:
        return session.client(name, region_name=region)

    dynamodb, s3, sns, sqs, events, ec2 = (client(n) for n in ("dynamodb", "s3", "sns", "sqs", "events", "ec2"))
    table = f"{prefix}-state"
    create_table(dynamodb, table)
    bucket = f"{prefix}-data-{region}"
    s3.create_bucket(Bucket=bucket)

    topics = {name: sns.create_topic(Name=f"{prefix}-{name}")["TopicArn"] for name in resources.TOPICS}
    queues: dict[str, dict[str, str]] = {}
    for queue in resources.QUEUES:
        dlq_url = sqs.create_queue(QueueName=f"{prefix}-{queue.key}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=f"{prefix}-{queue.key}", Attributes={
            "VisibilityTimeout": str(queue.visibility_timeout_seconds),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}),
        })["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues[queue.key] = {"url": url, "arn": arn, "dlq_url": dlq_url}
    for subscription in resources.SUBSCRIPTIONS:
        sns.subscribe(
            TopicArn=topics[subscription.topic], Protocol="sqs", Endpoint=queues[subscription.queue]["arn"],
            Attributes={"FilterPolicy": json.dumps(subscription.filter_policy()), "RawMessageDelivery": "false"},
        )
    for rule in resources.RULES:
        events.put_rule(Name=f"{prefix}-{rule.key}", EventPattern=json.dumps(rule.pattern), State="ENABLED")
        events.put_targets(Rule=f"{prefix}-{rule.key}", Targets=[{"Id": rule.queue, "Arn": queues[rule.queue]["arn"]}])

    log_group = create_task_log_group(client("logs"), f"/{prefix}/tasks", region, account=_account(dynamodb, table))

    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{n}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for n, zone in enumerate(zones)
    }
    # Named, not created: moto has no placement groups (CreatePlacementGroup is not implemented and
    # RunInstances ignores the group), and local instances, processes of one machine, are as close as
    # nodes get. The launch still names the zone's group, as on AWS.
    placement_groups = {zone: f"{prefix}-cluster-{zone}" for zone in zones}
    template = ec2.create_launch_template(
        LaunchTemplateName=f"{prefix}-worker",
        LaunchTemplateData={"ImageId": WORKER_IMAGE_ID, "MetadataOptions": {"HttpTokens": "required"}},
    )["LaunchTemplate"]["LaunchTemplateId"]

    # The API's page-token key, as the stack generates it (a random string in Secrets Manager).
    page_key = client("secretsmanager").create_secret(
        Name=f"{prefix}-page-token-key", SecretString=secrets.token_urlsafe(48))["ARN"]

    roles = _worker_roles(client("iam"), prefix, region, table_arn=dynamodb.describe_table(TableName=table)["Table"]["TableArn"],
                          bucket_arn=f"arn:aws:s3:::{bucket}",
                          queue_arns=[queues["reports"]["arn"]], log_group_arn=log_group)

    return {
        **roles,
        EnvVar.TABLE: table, EnvVar.BUCKET: bucket,
        EnvVar.CONTROL_TOPIC_ARN: topics["control"], EnvVar.NOTIFY_TOPIC_ARN: topics["notifications"],
        EnvVar.REPORT_QUEUE_URL: queues["reports"]["url"],
        EnvVar.LAUNCH_TEMPLATE_ID: template, EnvVar.SUBNETS: json.dumps(subnets), EnvVar.WORKER_IMAGE_ID: WORKER_IMAGE_ID,
        EnvVar.INSTANCE_TYPES: json.dumps(list(instance_types)),
        EnvVar.PLACEMENT_GROUPS: json.dumps(placement_groups),
        EnvVar.TASK_LOG_GROUP: f"/{prefix}/tasks",
        "SPOTRUN_QUEUE_URLS": json.dumps({k: v["url"] for k, v in queues.items()}),
        "SPOTRUN_DLQ_URLS": json.dumps({k: v["dlq_url"] for k, v in queues.items()}),
        EnvVar.PAGE_KEY_ARN: page_key,
        "AWS_REGION": region,
    }


TASK_LOG_RETENTION_DAYS = 30  # as the stack keeps them (stacks.constructs.logs)


def create_task_log_group(logs: Any, name: str, region: str, account: str) -> str:
    """The attempts' log group with its retention; its ARN without the trailing ':*'."""
    logs.create_log_group(logGroupName=name)
    logs.put_retention_policy(logGroupName=name, retentionInDays=TASK_LOG_RETENTION_DAYS)
    return f"arn:aws:logs:{region}:{account}:log-group:{name}"


def _account(dynamodb: Any, table: str) -> str:
    return str(dynamodb.describe_table(TableName=table)["Table"]["TableArn"].split(":")[4])


def _worker_roles(iam: Any, prefix: str, region: str, *, table_arn: str, bucket_arn: str,
                  queue_arns: list[str], log_group_arn: str) -> dict[str, str]:
    """The instance role and the task role, with the policies the stack gives them (`spotrun.access`)."""
    def role(name: str, service: str, policy: dict[str, Any]) -> str:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service},
                                                          "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="spotrun", PolicyDocument=json.dumps(policy))
        return str(arn)

    account = table_arn.split(":")[4]
    instance_role = f"{prefix}-instance"
    # The worker-api function as the stack names it; locally its URL is spotrun_local.function_url's stand-in.
    worker_api_arn = f"arn:aws:lambda:{region}:{account}:function:{prefix}-worker-api"
    instance_document = access.instance_policy(
        instances_arn=f"arn:aws:ec2:{region}:{account}:instance/*", managed_tag=("spotrun:managed", "true"))
    instance_document["Statement"] += access.worker_routes_statements(worker_api_arn)
    instance_arn = role(instance_role, "ec2.amazonaws.com", instance_document)
    task_arn = role(f"{prefix}-task", "lambda.amazonaws.com",
                    access.task_policy(table_arn=table_arn, bucket_arn=bucket_arn, queue_arns=queue_arns,
                                       log_group_arn=log_group_arn))
    return {EnvVar.TASK_ROLE_ARN: task_arn, EnvVar.INSTANCE_ROLE_NAME: instance_role,
            "SPOTRUN_INSTANCE_ROLE_ARN": instance_arn, WORKER_API_ARN: worker_api_arn}
