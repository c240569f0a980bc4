"""The control-plane functions: one factory turns each `resources.FunctionDef` into a function with
its own log group and role, and each grant name into least-privilege policy statements."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spotrun import resources
from spotrun.access import task_policy
from spotrun.resources import EnvVar
from stacks import LAMBDAS_DIR
from stacks.config import SpotrunConfig
from stacks.constructs.fleet import MANAGED_TAG_KEY, MANAGED_TAG_VALUE, Fleet
from stacks.constructs.nag import acknowledge, logical_ref
from stacks.constructs.state import USER_PREFIXES

# Shared Lambda defaults: every function gets these, the FunctionDef adds the rest.
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.X86_64  # must match the Powertools layer's build
TRACING = lambda_.Tracing.ACTIVE
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
SERVICE_NAME = "spotrun"
# The public Powertools v3 layer (with pydantic), published by AWS in every commercial region.
POWERTOOLS_LAYER_ARN = (
    "arn:aws:lambda:${AWS::Region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:%d"
)
ASSET_EXCLUDES = [
    "**/__pycache__",
    "**/*.pyc",
    "**/tests",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/*.egg-info",
]
FUNCTION_TAG = "spotrun:function"


@dataclass(frozen=True)
class FunctionWiring:
    """What the functions are wired to."""

    table: dynamodb.ITable
    bucket: s3.IBucket
    page_key: secretsmanager.ISecret
    topics: Mapping[str, sns.ITopic]
    queues: Mapping[str, sqs.IQueue]
    fleet: Fleet
    config: SpotrunConfig
    task_logs: logs.ILogGroup  # the attempts' logs: a stream per attempt


class Functions(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, wiring: FunctionWiring) -> None:
        super().__init__(scope, construct_id)
        self._wiring = wiring
        self._code = lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=ASSET_EXCLUDES)
        self._powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            Fn.sub(POWERTOOLS_LAYER_ARN % wiring.config.powertools_layer_version),
        )
        self._environment = _environment(wiring)
        self._acknowledged: set[tuple[str, str]] = set()
        self.task_role: iam.Role | None = None
        self._routes: lambda_.FunctionUrl | None = None
        self.functions: dict[str, lambda_.Function] = {
            definition.key: self._function(definition) for definition in resources.FUNCTIONS
        }
        self._wire_worker_identities()
        if self._routes is None:
            raise ValueError(f"no function is invoked by {resources.WORKER_ROUTES}: the workers would have no routes")
        self.worker_routes: lambda_.FunctionUrl = self._routes  # the worker-api function's own URL
        for queue in resources.QUEUES:
            self._consume(queue)

    def _function(self, definition: resources.FunctionDef) -> lambda_.Function:
        key = definition.key
        log_group = logs.LogGroup(self, f"{key}-logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)
        role = iam.Role(
            self,
            f"{key}-role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"spotrun {key} function",
        )
        # Instead of AWSLambdaBasicExecutionRole (any log group): only this function's own.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        function = lambda_.Function(
            self,
            key,
            description=f"spotrun: {definition.description}",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=self._code,
            handler=definition.handler,
            timeout=Duration.seconds(definition.timeout_seconds),
            memory_size=definition.memory_mb,
            environment=_environment_of(definition, self._environment),
            layers=[self._powertools],
            tracing=TRACING if definition.traced else lambda_.Tracing.PASS_THROUGH,
            role=role,
            log_group=log_group,
            reserved_concurrent_executions=definition.reserved_concurrency,
        )
        Tags.of(function).add(FUNCTION_TAG, key)
        # CDK adds DependsOn on the role (with its policies) next to the Role GetAtt; cfn-lint W3005
        # flags the role half as redundant. Silence it for this resource only: the DependsOn on the
        # policies is what keeps the function from running before its permissions exist.
        cfn_function = function.node.default_child
        assert isinstance(cfn_function, lambda_.CfnFunction)
        cfn_function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        acknowledge(
            function,
            "L1",
            "Python 3.12 is pinned on purpose: the handlers are tested on it and the public Powertools "
            "layer is the python312 build (compiled pydantic-core); both move to a newer runtime together.",
        )
        acknowledge(
            role,
            "IAM5",
            "X-Ray (active tracing, or passing a sampled caller's trace through) has no resource-level "
            "permissions: PutTraceSegments and PutTelemetryRecords only accept Resource '*'.",
            "Resource::*",
        )
        for grant in definition.grants:
            self._grant(grant, function, role)
        if definition.invoked_by == resources.WORKER_ROUTES:
            # The workers' routes: the function's own URL, every request SigV4-signed and authorized by IAM
            # (the instance role's policy, `Fleet.allow_worker_routes`). No API Gateway request, no trace.
            self._routes = function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.AWS_IAM)
        return function

    def _grant(self, grant: str, function: lambda_.Function, role: iam.Role) -> None:
        match grant.split(":"):
            case ["table", "rw"]:
                table = self._wiring.table
                table.grant_read_write_data(function)
                acknowledge(
                    role,
                    "IAM5",
                    "Read/write on the table includes its global secondary indexes (by_state, by_job, "
                    "jobs_by_time, live), which IAM names only as <table>/index/*.",
                    f"Resource::<{logical_ref(table)}.Arn>/index/*",
                )
            case ["role", "task", "assume"]:
                self.task_role = self._task_role(role)
            case ["secret", "page-key", "read"]:
                self._wiring.page_key.grant_read(role)
                function.add_environment(EnvVar.PAGE_KEY_ARN, self._wiring.page_key.secret_arn)
            case ["bucket", "presign"]:
                self._grant_presign(function, role)
            case ["logs", "read"]:
                self._grant_task_logs(role, "ReadAttemptLogs", ["logs:GetLogEvents"])
            case ["logs", "streams"]:
                self._grant_task_logs(role, "OpenAttemptLogStreams", ["logs:CreateLogStream"])
            case ["topic", name, "publish"]:
                topic = self._wiring.topics[name]
                topic.grant_publish(function)
                if (role.node.path, "kms") not in self._acknowledged:  # one key for all topics
                    self._acknowledged.add((role.node.path, "kms"))
                    acknowledge(
                        role,
                        "IAM5",
                        "Publishing to a KMS-encrypted topic needs kms:GenerateDataKey* (the family of "
                        "data-key calls SNS makes); it is granted on the topics' key only.",
                        "Action::kms:GenerateDataKey*",
                    )
            case ["ec2", "launch"]:
                self._attach(function, role, "ec2-launch", self._launch_statements())
            case ["ec2", "describe"]:
                self._attach(function, role, "ec2-describe", [_describe_instances_statement()])
            case ["ec2", "terminate"]:
                self._attach(function, role, "ec2-terminate", [self._terminate_statement()])
            case _:
                raise ValueError(f"function {function.node.id}: unknown grant {grant!r}")

    def task_log_group_arn(self) -> str:
        """arn:...:log-group:<name>, without the ':*' CDK's log_group_arn ends with (spotrun.access.task_policy)."""
        return Stack.of(self).format_arn(service="logs", resource="log-group",
                                         resource_name=self._wiring.task_logs.log_group_name,
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def _grant_task_logs(self, role: iam.Role, sid: str, actions: list[str]) -> None:
        """The attempts' log group: the group (the stream actions' group-level form) and its streams."""
        group = self.task_log_group_arn()
        role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=[group, f"{group}:log-stream:*"]))
        acknowledge(
            role,
            "IAM5",
            "Attempts' log streams are named <job>/<task>/<attempt> at run time; the grant is bounded to "
            "spotrun's own log group of attempt logs.",
            f"Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<{logical_ref(self._wiring.task_logs)}>:log-stream:*",
        )

    def _task_role(self, issuer: iam.Role) -> iam.Role:
        """The role of workers' task credentials: only the worker-api function may open sessions of it,
        each tagged with one task; its policy (`spotrun.access.task_policy`) confines a session to
        that task's items (reading them, writing its beat), checkpoint and output prefixes, and the report queue."""
        plane = self._wiring
        document = task_policy(
            table_arn=plane.table.table_arn, bucket_arn=plane.bucket.bucket_arn,
            queue_arns=[plane.queues["reports"].queue_arn],
            log_group_arn=self.task_log_group_arn(),
        )
        task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ArnPrincipal(issuer.role_arn).with_session_tags(),
            description="spotrun worker task credentials (one session per attempt, tagged with its task)",
            max_session_duration=Duration.hours(1),
            inline_policies={"task": iam.PolicyDocument.from_json(document)},
        )
        issuer.add_to_policy(iam.PolicyStatement(
            sid="OpenTaskSessions", actions=["sts:AssumeRole", "sts:TagSession"], resources=[task_role.role_arn],
        ))
        bucket = logical_ref(plane.bucket)
        acknowledge(
            task_role,
            "IAM5",
            "Each session reaches only its own task's keys: the wildcards follow prefixes built from the "
            "session's tags (aws:PrincipalTag/job and task), so one attempt cannot name another task's files.",
            f"Resource::<{bucket}.Arn>/checkpoints/<aws:PrincipalTag/job>/<aws:PrincipalTag/task>/*",
            f"Resource::<{bucket}.Arn>/jobs/<aws:PrincipalTag/job>/outputs/<aws:PrincipalTag/task>/*",
            f"Resource::<{bucket}.Arn>/jobs/<aws:PrincipalTag/job>/logs/<aws:PrincipalTag/task>/*",
            "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            f"<{logical_ref(plane.task_logs)}>:log-stream:<aws:PrincipalTag/job>/<aws:PrincipalTag/task>/*",
        )
        acknowledge(
            task_role,
            "IAM5",
            "The combine step reads every task's outputs of its own job (the job from the session's tag), "
            "and only a session tagged kind=combine may.",
            f"Resource::<{bucket}.Arn>/jobs/<aws:PrincipalTag/job>/outputs/*",
        )
        acknowledge(
            task_role,
            "IAM5",
            "Inputs users upload through the API's presigned URLs have random keys under uploads/; workers "
            "may read them, never write.",
            f"Resource::<{bucket}.Arn>/uploads/*",
        )
        return task_role

    def _wire_worker_identities(self) -> None:
        """Who may ask for task credentials, and whose messages the consumers accept."""
        if self.task_role is None:
            return
        instance_role = self._wiring.fleet.role
        self.functions["worker-api"].add_environment(EnvVar.TASK_ROLE_ARN, self.task_role.role_arn)
        self.functions["worker-api"].add_environment(EnvVar.INSTANCE_ROLE_NAME, instance_role.role_name)
        self.functions["finisher"].add_environment(EnvVar.TASK_ROLE_ID, self.task_role.role_id)

    def _grant_presign(self, function: lambda_.Function, role: iam.Role) -> None:
        """Presigned URLs carry the signer's permissions, so the function holds exactly what the URLs
        it hands out may do: upload inputs under uploads/, download outputs under jobs/."""
        bucket = self._wiring.bucket
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PresignUploadsAndJobFiles",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in USER_PREFIXES],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListJobOutputs",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in USER_PREFIXES]}},
            )
        )
        acknowledge(
            role,
            "IAM5",
            "Presigned URLs point at per-user and per-job keys created at run time; the signer is limited "
            "to the uploads/ and jobs/ prefixes of the spotrun bucket.",
            *(f"Resource::<{logical_ref(bucket)}.Arn>/{prefix}*" for prefix in USER_PREFIXES),
        )

    def _attach(
        self, function: lambda_.Function, role: iam.Role, name: str, statements: list[iam.PolicyStatement]
    ) -> iam.Policy:
        # EC2 permissions get their own policy so their acknowledgments cover nothing else.
        policy = iam.Policy(self, f"{function.node.id}-{name}", roles=[role], statements=statements)
        function.node.add_dependency(policy)
        for finding, reason in _EC2_FINDINGS.get(name, {}).items():
            acknowledge(policy, "IAM5", reason, finding)
        return policy

    def _ec2_arn(self, resource: str, name: str = "*", *, account: str | None = None) -> str:
        return Stack.of(self).format_arn(service="ec2", resource=resource, resource_name=name, account=account)

    def _launch_statements(self) -> list[iam.PolicyStatement]:
        """What `spotrun.adapters.ec2.Ec2Compute.launch` does: one RunInstances per pool from the
        launch template (spot or on-demand), then per-instance task tags when a call launched several."""
        fleet = self._wiring.fleet
        return [
            # Every instance and volume is created with spotrun:managed=true, so the control plane
            # can later tag and terminate exactly what it launched.
            iam.PolicyStatement(
                sid="LaunchTaggedWorkers",
                actions=["ec2:RunInstances"],
                resources=[self._ec2_arn("instance"), self._ec2_arn("volume")],
                conditions={"StringEquals": {f"aws:RequestTag/{MANAGED_TAG_KEY}": MANAGED_TAG_VALUE}},
            ),
            # Only from spotrun's launch template, into spotrun's subnets, with spotrun's security
            # group. The network interface is created in one of those subnets.
            iam.PolicyStatement(
                sid="LaunchIntoWorkerNetwork",
                actions=["ec2:RunInstances"],
                resources=[
                    self._ec2_arn("launch-template", fleet.launch_template_id),
                    self._ec2_arn("security-group", fleet.security_group.security_group_id),
                    *(self._ec2_arn("subnet", subnet.subnet_id) for subnet in fleet.subnets),
                    self._ec2_arn("network-interface"),
                    self._ec2_arn("spot-instances-request"),
                    self._ec2_arn("image", fleet.image.image_id, account=""),  # the worker image only
                    # a gang placed together: only into the deployment's own cluster placement groups
                    *(self._ec2_arn("placement-group", group.ref) for group in fleet.placement_groups),
                ],
            ),
            iam.PolicyStatement(
                sid="TagAtLaunch",
                actions=["ec2:CreateTags"],
                resources=[self._ec2_arn("instance"), self._ec2_arn("volume")],
                conditions={"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            ),
            iam.PolicyStatement(
                sid="PassWorkerRoleToEc2",
                actions=["iam:PassRole"],
                resources=[fleet.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            ),
            # An account's first spot launch through the API needs the Spot service-linked role.
            iam.PolicyStatement(
                sid="CreateSpotServiceLinkedRole",
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    Stack.of(self).format_arn(
                        service="iam",
                        region="",
                        resource="role",
                        resource_name="aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
                    )
                ],
                conditions={"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
            ),
            # The broker's market data and the launch's own read-back.
            iam.PolicyStatement(
                sid="ReadSpotMarket",
                actions=["ec2:DescribeSpotPriceHistory", "ec2:DescribeInstances"],
                resources=["*"],
            ),
        ]

    def _terminate_statement(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="TerminateManagedWorkersOnly",
            actions=["ec2:TerminateInstances"],
            resources=[self._ec2_arn("instance")],
            conditions={"StringEquals": {f"aws:ResourceTag/{MANAGED_TAG_KEY}": MANAGED_TAG_VALUE}},
        )

    def _consume(self, definition: resources.QueueDef) -> None:
        function = self.functions[definition.consumer]
        consumer = resources.function(definition.consumer)
        least = resources.VISIBILITY_FACTOR * consumer.timeout_seconds + definition.max_batching_window_seconds
        if definition.visibility_timeout_seconds < least:
            raise ValueError(
                f"queue {definition.key}: visibility timeout {definition.visibility_timeout_seconds}s is less than "
                f"{resources.VISIBILITY_FACTOR} times the {consumer.key} function's timeout {consumer.timeout_seconds}s "
                f"plus the batching window (AWS's guidance for event source mappings)"
            )
        if definition.batch_size > 10 and definition.max_batching_window_seconds < 1:
            raise ValueError(f"queue {definition.key}: a batch size above 10 needs a batching window")
        window = definition.max_batching_window_seconds
        function.add_event_source(
            event_sources.SqsEventSource(
                self._wiring.queues[definition.key],
                batch_size=definition.batch_size,
                max_batching_window=Duration.seconds(window) if window else None,
                report_batch_item_failures=True,
            )
        )


def _describe_instances_statement() -> iam.PolicyStatement:
    return iam.PolicyStatement(
        sid="ConfirmWorkersAgainstEc2",
        actions=["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"],
        resources=["*"],
    )


def _environment_of(definition: resources.FunctionDef, shared: Mapping[str, str]) -> dict[str, str]:
    """The shared wiring, less the launch template for a function that launches nothing: the workers' launch
    template names the worker-api function's URL, so that function naming the template would be a cycle."""
    environment = dict(shared)
    if "ec2:launch" not in definition.grants:
        environment.pop(EnvVar.LAUNCH_TEMPLATE_ID)
    return environment


def _environment(wired: FunctionWiring) -> dict[str, str]:
    config = wired.config
    topics, queues, fleet = wired.topics, wired.queues, wired.fleet
    return {
        EnvVar.TABLE: wired.table.table_name,
        EnvVar.BUCKET: wired.bucket.bucket_name,
        EnvVar.CONTROL_TOPIC_ARN: topics["control"].topic_arn,
        EnvVar.NOTIFY_TOPIC_ARN: topics["notifications"].topic_arn,
        EnvVar.REPORT_QUEUE_URL: queues["reports"].queue_url,
        EnvVar.LAUNCH_TEMPLATE_ID: fleet.launch_template_id,
        EnvVar.WORKER_IMAGE_ID: fleet.image.image_id,
        EnvVar.SUBNETS: fleet.subnets_json(),
        EnvVar.PLACEMENT_GROUPS: fleet.placement_groups_json(),
        EnvVar.INSTANCE_TYPES: json.dumps(list(config.instance_types), separators=(",", ":")),
        EnvVar.ACCOUNT_MAX_INSTANCES: str(config.account_max_instances),
        EnvVar.POOL_MAX_INSTANCES: str(config.pool_max_instances),
        EnvVar.TASK_LOG_GROUP: wired.task_logs.log_group_name,
        "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": SERVICE_NAME,
        # Responses can hold presigned URLs (which carry the function's session token): never in traces.
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    }


_DESCRIBE_REASON = (
    "EC2 Describe* calls do not support resource-level permissions; Resource '*' is the only form IAM accepts for them."
)

# Per policy: the wildcard findings IAM forces on us, and why each is bounded.
_EC2_FINDINGS: dict[str, dict[str, str]] = {
    "ec2-launch": {
        "Resource::*": _DESCRIBE_REASON,
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*": (
            "Instance ids do not exist before launch: launching requires the request tag "
            "spotrun:managed=true, and later tags need that tag on the instance and spotrun: keys."
        ),
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:volume/*": (
            "Root volume ids do not exist before launch; creating one requires the request tag "
            "spotrun:managed=true, and CreateTags is only allowed as part of the launch."
        ),
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*": (
            "The launch's network interface is created at launch time and only in spotrun's subnets, "
            "which are listed by id in the same statement."
        ),
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:spot-instances-request/*": (
            "Spot requests are created by the launch itself and have no id beforehand; the launch is "
            "bounded by the template, subnets, security group and tag conditions."
        ),
    },
    "ec2-describe": {"Resource::*": _DESCRIBE_REASON},
    "ec2-terminate": {
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*": (
            "Workers come and go by the thousand; TerminateInstances is conditioned on the resource "
            "tag spotrun:managed=true, so only instances spotrun launched can be ended."
        ),
    },
}
