"""The fleet: where workers (spotrun's instances, each running the agent) run. A public-subnet VPC
without NAT, the worker security group, the instance role and profile, and the generic launch template
the scheduler launches spot instances from."""

from __future__ import annotations

from pathlib import Path

import jsii
from aws_cdk import Aws, Fn, Stack, Tags
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IValidation

from spotrun.access import instance_policy, worker_routes_statements
from spotrun.resources import EnvVar
from stacks.constructs.nag import acknowledge
from stacks.constructs.worker_image import DMTCP_PREFIX, SPOTRUN_PREFIX, WorkerImage

# Every instance spotrun launches carries this tag; the control plane may only terminate (and, at
# launch, only create) instances that carry it.
MANAGED_TAG_KEY = "spotrun:managed"
MANAGED_TAG_VALUE = "true"

VPC_CIDR = "10.64.0.0/16"
# /19 per AZ: ~8,000 addresses, so 10,000 workers fit even when the broker favours a few zones;
# a /16 holds up to 8 of them, more than spotrun:maxAzs allows.
SUBNET_CIDR_MASK = 19

AGENT_ENV_FILE = "/etc/spotrun/agent.env"
AGENT_UNIT = "spotrun-agent.service"
AGENT_BINARY = "/opt/spotrun/bin/spotrun-agent"
IMAGE_CHECK_FILE = "/run/spotrun/image-check.json"
REPO_DIR = Path(__file__).resolve().parents[2]
# The agent's bundles: code and the DMTCP pin it checks against; the image's build inputs (its scripts,
# DMTCP's gang patch) stay out: they ship in the image build's own asset.
BUNDLE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/tests", "**/*.sh", "**/*.patch"]


class Fleet(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        max_azs: int,
        root_volume_gib: int,
        table: dynamodb.ITable,
        bucket: s3.IBucket,
        log_bucket: s3.IBucket,
        report_queue: sqs.IQueue,
        task_log_group: str,
        worker_ami: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = self._vpc(max_azs, log_bucket)
        self.subnets = self.vpc.public_subnets
        # One cluster placement group per zone, for gangs that ask for `placement: cluster`. A cluster group
        # holds instances of one zone only; it is bound to the zone of its first instance, so each subnet's
        # zone gets its own. Placement groups cost nothing while empty.
        self.placement_groups = [
            ec2.CfnPlacementGroup(self, f"Cluster{position}", strategy="cluster",
                                  tags=[{"key": MANAGED_TAG_KEY, "value": MANAGED_TAG_VALUE}])
            for position, _ in enumerate(self.subnets)
        ]
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=self.vpc,
            description="spotrun workers: no inbound at all (Session Manager instead of SSH)",
            allow_all_outbound=True,  # user programs install packages and reach AWS APIs
        )
        # DMTCP and the agent's Python come with the image, built once per deployment (or the user's AMI).
        self.image = WorkerImage(self, "Image", user_ami=worker_ami, subnet=self.subnets[0],
                                 security_group=self.security_group)
        self.role = self._instance_role()
        self.instance_profile = iam.InstanceProfile(self, "InstanceProfile", role=self.role)
        # The agent ships as two assets: the shared control-plane package (wire messages, store,
        # lifecycle) and the worker package; the instance role may read exactly these objects.
        bundles = [
            s3_assets.Asset(self, "AgentControlPlaneCode", path=str(REPO_DIR / "lambdas"), exclude=BUNDLE_EXCLUDES),
            s3_assets.Asset(self, "AgentWorkerCode", path=str(REPO_DIR / "worker"), exclude=BUNDLE_EXCLUDES),
        ]
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key) for bundle in bundles],
        ))
        self._bundles = bundles
        self._agent_settings = {
            EnvVar.TABLE: table.table_name,
            EnvVar.BUCKET: bucket.bucket_name,
            EnvVar.REPORT_QUEUE_URL: report_queue.queue_url,
            EnvVar.TASK_LOG_GROUP: task_log_group,
            "AWS_REGION": Aws.REGION,
            "AWS_DEFAULT_REGION": Aws.REGION,
        }
        # Written by `allow_worker_routes`: the agent's settings name the worker routes' URL, which exists only
        # once the functions do (and they are wired to this fleet). The template renders it at synthesis.
        self._user_data = ec2.UserData.for_linux()
        self._routes_url: str | None = None
        self.launch_template = self._launch_template(root_volume_gib, self._user_data)
        self.node.add_validation(_RoutesGiven(self))

    @property
    def launch_template_id(self) -> str:
        template_id = self.launch_template.launch_template_id
        assert template_id is not None, "a template created in this stack always has an id"
        return template_id

    def subnets_json(self) -> str:
        """`{"<az>": "<subnet-id>", ...}` for the SUBNETS variable, as a deploy-time token."""
        parts: list[str] = ["{"]
        for position, subnet in enumerate(self.subnets):
            parts += ["," if position else "", '"', subnet.availability_zone, '":"', subnet.subnet_id, '"']
        parts.append("}")
        return Fn.join("", parts)

    def placement_groups_json(self) -> str:
        """`{"<az>": "<placement group name>", ...}` for the PLACEMENT_GROUPS variable (deploy-time tokens)."""
        parts: list[str] = ["{"]
        for position, (subnet, group) in enumerate(zip(self.subnets, self.placement_groups, strict=True)):
            parts += ["," if position else "", '"', subnet.availability_zone, '":"', group.ref, '"']
        parts.append("}")
        return Fn.join("", parts)

    def _vpc(self, max_azs: int, log_bucket: s3.IBucket) -> ec2.Vpc:
        return ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            # The stack is region-agnostic, where CDK would stop at two zones; pick the first
            # max_azs zones of the deployment region at deploy time instead.
            availability_zones=[Fn.select(index, Fn.get_azs()) for index in range(max_azs)],
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="workers",
                    subnet_type=ec2.SubnetType.PUBLIC,
                    cidr_mask=SUBNET_CIDR_MASK,
                    map_public_ip_on_launch=True,
                )
            ],
            # S3 and DynamoDB traffic (checkpoints, task state) stays off the internet and is free.
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            flow_logs={
                "all-traffic": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(log_bucket, "vpc-flow-logs/"),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
            # Nothing uses the default security group; restricting it would add a CDK custom
            # resource (a Node.js Lambda) to the stack for no gain.
            restrict_default_security_group=False,
        )

    def allow_worker_routes(self, routes: lambda_.FunctionUrl) -> None:
        """The workers call the worker routes at `routes` (their user data names its URL), and the instance role
        may call them: the worker-api function through its URL, and only so (`worker_routes_statements`)."""
        if self._routes_url is not None:
            raise ValueError("the workers' routes are given once")
        self._agent_policy.add_statements(
            *(iam.PolicyStatement.from_json(statement) for statement in worker_routes_statements(routes.function_arn)))
        self._routes_url = routes.url
        _write_user_data(self._user_data, self._bundles,
                         {**self._agent_settings, EnvVar.WORKER_API_URL: routes.url})

    def _instance_role(self) -> iam.Role:
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spotrun worker agent",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        acknowledge(
            role,
            "IAM4",
            "AmazonSSMManagedInstanceCore is the AWS-maintained minimum for Session Manager, which "
            "replaces SSH: the worker security group has no inbound rule at all.",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore",
        )
        # The instance role reaches no task data at all: a program on the instance can read these
        # credentials from the metadata service. The agent asks the worker routes for its task's
        # credentials (spotrun.access.task_policy, one session per attempt); with these it may only
        # call those routes (granted by `allow_worker_routes`) and end its own instance.
        policy = iam.Policy(
            self,
            "AgentPolicy",
            roles=[role],
            document=iam.PolicyDocument.from_json(instance_policy(
                instances_arn=Stack.of(self).format_arn(service="ec2", resource="instance", resource_name="*"),
                managed_tag=(MANAGED_TAG_KEY, MANAGED_TAG_VALUE),
            )),
        )
        self._agent_policy = policy
        acknowledge(
            policy,
            "IAM5",
            "An instance does not know its ARN before launch; the statement is bound to the caller's own "
            "instance by aws:ARN = ${ec2:SourceInstanceARN} and to spotrun:managed=true.",
            "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*",
        )
        return role

    def _launch_template(self, root_volume_gib: int, user_data: ec2.UserData) -> ec2.LaunchTemplate:
        # Generic on purpose: the scheduler sets instance type, subnet, spot market options and the
        # task's tags per launch (one RunInstances per pool, version $Default).
        template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=self.image.machine_image,
            user_data=user_data,
            instance_profile=self.instance_profile,
            security_group=self.security_group,
            require_imdsv2=True,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_endpoint=True,
            # 2 hops so a checkpointed program in a container can still reach the metadata service.
            http_put_response_hop_limit=2,
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",  # the root device of Amazon Linux 2023
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gib,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        # Rendered into the template's instance and volume tag specifications.
        Tags.of(template).add(MANAGED_TAG_KEY, MANAGED_TAG_VALUE)
        Tags.of(template).add("Name", "spotrun-worker")
        return template


@jsii.implements(IValidation)
class _RoutesGiven:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def validate(self) -> list[str]:
        if self._fleet._routes_url is None:  # noqa: SLF001 - the fleet's own check
            return ["the workers' launch template has no user data: call Fleet.allow_worker_routes"]
        return []


def _write_user_data(user_data: ec2.UserData, bundles: list[s3_assets.Asset], settings: dict[str, str]) -> None:
    """Install the agent's code, check what the image provides, write the agent's wiring, start it.

    No compiler, no package manager: DMTCP and the agent's Python come with the worker image
    (worker_image.WorkerImage). The boot check (`spotrun-agent check-image`: the DMTCP programs
    present and `dmtcp_launch --version` equal to the pinned version) runs before the agent starts;
    the agent acts on its result (a method the image cannot run is reported once, as the image's
    fault). Credentials come from the instance role, never from here.
    """
    python = f"{SPOTRUN_PREFIX}/venv/bin/python"
    user_data.add_commands(
        "set -euo pipefail",
        f"test -x {python} || {{ echo 'spotrun: this image has no {SPOTRUN_PREFIX}/venv; build it with "
        f"worker/image/build-worker-image.sh (README, Deploy)' >&2; exit 1; }}",
        f"install -d -m 0755 {SPOTRUN_PREFIX}/lib {SPOTRUN_PREFIX}/bin /etc/spotrun /run/spotrun",
    )
    for bundle, target in zip(bundles, ("lambdas", "worker"), strict=True):
        local = user_data.add_s3_download_command(bucket=bundle.bucket, bucket_key=bundle.s3_object_key)
        user_data.add_commands(f"rm -rf {SPOTRUN_PREFIX}/lib/{target}",
                               f"{python} -m zipfile -e {local} {SPOTRUN_PREFIX}/lib/{target}")
    user_data.add_commands(
        f"cat > {AGENT_BINARY} <<'SPOTRUN_BIN'",
        "#!/bin/sh",
        f"PYTHONPATH={SPOTRUN_PREFIX}/lib/lambdas:{SPOTRUN_PREFIX}/lib/worker exec {python} -m spotrun_worker \"$@\"",
        "SPOTRUN_BIN",
        f"chmod 0755 {AGENT_BINARY}",
        f"cat > {AGENT_ENV_FILE} <<'SPOTRUN_ENV'",
        *(f"{name}={value}" for name, value in settings.items()),
        f"SPOTRUN_DMTCP_BIN={DMTCP_PREFIX}/bin",
        f"{EnvVar.IMAGE_CHECK}={IMAGE_CHECK_FILE}",
        "SPOTRUN_ENV",
        f"chmod 0644 {AGENT_ENV_FILE}",
        # The boot check, before the agent starts; its verdict is on the console and in the file the
        # agent reads. A failed check still starts the agent: it runs what the image can run and
        # reports the rest once, as the image's fault.
        f"set -a; . {AGENT_ENV_FILE}; set +a",
        f"{AGENT_BINARY} check-image --out {IMAGE_CHECK_FILE} || echo 'spotrun: the worker image cannot run "
        "every checkpoint method (see above); the agent reports it for the first task that needs one' >&2",
        f"cat > /etc/systemd/system/{AGENT_UNIT} <<'SPOTRUN_UNIT'",
        "[Unit]",
        "Description=spotrun worker agent",
        "Wants=network-online.target",
        "After=network-online.target",
        f"ConditionPathExists={AGENT_BINARY}",
        "[Service]",
        f"EnvironmentFile={AGENT_ENV_FILE}",
        f"ExecStart={AGENT_BINARY}",
        "Restart=on-failure",
        "RestartSec=5",
        "[Install]",
        "WantedBy=multi-user.target",
        "SPOTRUN_UNIT",
        "systemctl daemon-reload",
        f"systemctl enable --now {AGENT_UNIT}",
    )
