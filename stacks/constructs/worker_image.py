"""The worker image: Amazon Linux 2023 with the pinned DMTCP and the agent's Python, built once per
deployment by an EC2 Image Builder pipeline the stack defines, or the user's own AMI.

The build is `worker/image/build-worker-image.sh` (the same script the test suite runs for real
against the vendored DMTCP tarball), shipped as an S3 asset and run by an Image Builder component:
DMTCP from its release tag `v4.2.0` with the tag's commit checked (worker/image/dmtcp.pin), Python
3.11 with the agent's pinned requirements in /opt/spotrun/venv. The component's validate phase and
the image's test phase (on a fresh instance booted from the new AMI) run `dmtcp_launch --version`
against the pin and import the requirements, so a broken image fails its build, not a task. Workers
then boot in seconds: no compiler, no package manager at boot (stacks.constructs.fleet).

Image Builder components and recipes are immutable per version, so their names carry a hash of
everything that goes into the image: a change to the scripts, the pin or the requirements builds a
new image (a new AMI id) at the next deploy; nothing else does.

`-c spotrun:workerAmi=ami-...` uses the user's own AMI instead (no pipeline): it must provide what
build-worker-image.sh builds (/opt/dmtcp and /opt/spotrun/venv); the boot check reports it if not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jsii
from aws_cdk import Aws, Fn
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_imagebuilder as imagebuilder
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.constructs.nag import acknowledge

REPO_DIR = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO_DIR / "worker" / "image"
PIN_FILE = IMAGE_DIR / "dmtcp.pin"
SPOTRUN_PREFIX = "/opt/spotrun"
DMTCP_PREFIX = "/opt/dmtcp"
PYTHON = "python3.11"  # Amazon Linux 2023's newest Python package; the agent needs 3.11+
# Amazon Linux 2023 as Image Builder's managed parent image: always the latest release, no lookup.
PARENT_IMAGE = "arn:${AWS::Partition}:imagebuilder:${AWS::Region}:aws:image/amazon-linux-2023-x86/x.x.x"
# What the build needs beyond the parent image (compilers for DMTCP, patch for its gang patch, git for the tag).
BUILD_PACKAGES = ("python3.11", "python3.11-pip", "gcc", "gcc-c++", "make", "patch", "git")  # pip: venv bootstraps it
BUILD_INSTANCE_TYPES = ("c6i.large",)
BUILD_WORKDIR = "/tmp/spotrun-image"


def read_pin(path: Path = PIN_FILE) -> dict[str, str]:
    """dmtcp.pin's KEY=value lines (shell-sourceable; the build script reads the same file)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def image_inputs_hash() -> str:
    """A digest of everything that goes into the image: the scripts and pins, and how they are run."""
    digest = hashlib.sha256()
    for path in sorted(p for p in IMAGE_DIR.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update("|".join((PARENT_IMAGE, PYTHON, SPOTRUN_PREFIX, DMTCP_PREFIX, *BUILD_PACKAGES)).encode())
    return digest.hexdigest()


@jsii.implements(ec2.IMachineImage)
class _KnownImage:
    """An AMI by id (a deploy-time token for the pipeline's image), for the launch template."""

    def __init__(self, image_id: str):
        self.image_id = image_id

    def get_image(self, scope: Construct) -> ec2.MachineImageConfig:
        return ec2.MachineImageConfig(image_id=self.image_id, os_type=ec2.OperatingSystemType.LINUX,
                                      user_data=ec2.UserData.for_linux())


class WorkerImage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, user_ami: str | None, subnet: ec2.ISubnet,
                 security_group: ec2.ISecurityGroup) -> None:
        super().__init__(scope, construct_id)
        self.pin = read_pin()
        self.built = user_ami is None
        if user_ami is not None:
            self.image_id = user_ami
        else:
            self.image_id = self._pipeline(subnet, security_group)
        self.machine_image: ec2.IMachineImage = _KnownImage(self.image_id)

    def _pipeline(self, subnet: ec2.ISubnet, security_group: ec2.ISecurityGroup) -> str:
        scripts = s3_assets.Asset(self, "BuildScripts", path=str(IMAGE_DIR))
        version = image_inputs_hash()[:12]
        name = Fn.join("-", [Aws.STACK_NAME, "worker", version])

        role = iam.Role(
            self,
            "BuildRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spotrun worker image build instance (EC2 Image Builder)",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("EC2InstanceProfileForImageBuilder"),
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore"),
            ],
        )
        # The build reads exactly its scripts' asset object.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[scripts.bucket.arn_for_objects(scripts.s3_object_key)]))
        acknowledge(
            role,
            "IAM4",
            "EC2 Image Builder requires these AWS-maintained policies on its build instances: "
            "EC2InstanceProfileForImageBuilder (the build's own logs and Image Builder calls) and "
            "AmazonSSMManagedInstanceCore (Image Builder drives the build through Systems Manager).",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/EC2InstanceProfileForImageBuilder",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore",
        )
        profile = iam.InstanceProfile(self, "BuildInstanceProfile", role=role)

        component = imagebuilder.CfnComponent(
            self,
            "Component",
            name=name,
            version="1.0.0",
            platform="Linux",
            description=f"DMTCP {self.pin['DMTCP_VERSION']} ({self.pin['DMTCP_TAG']}) and the spotrun agent's Python",
            change_description=f"inputs {version}",
            data=self._component_document(scripts.s3_object_url),
        )
        recipe = imagebuilder.CfnImageRecipe(
            self,
            "Recipe",
            name=name,
            version="1.0.0",
            parent_image=Fn.sub(PARENT_IMAGE),
            components=[imagebuilder.CfnImageRecipe.ComponentConfigurationProperty(component_arn=component.attr_arn)],
            working_directory="/tmp",
        )
        infrastructure = imagebuilder.CfnInfrastructureConfiguration(
            self,
            "Infrastructure",
            name=name,
            instance_profile_name=profile.instance_profile_name,
            instance_types=list(BUILD_INSTANCE_TYPES),
            # A public subnet of the workers' VPC (the build fetches packages, the release tag and
            # the requirements) with the workers' security group: no inbound rule at all.
            subnet_id=subnet.subnet_id,
            security_group_ids=[security_group.security_group_id],
            terminate_instance_on_failure=True,
            instance_metadata_options=imagebuilder.CfnInfrastructureConfiguration.InstanceMetadataOptionsProperty(
                http_tokens="required", http_put_response_hop_limit=2),
        )
        image = imagebuilder.CfnImage(
            self,
            "Image",
            image_recipe_arn=recipe.attr_arn,
            infrastructure_configuration_arn=infrastructure.attr_arn,
            enhanced_image_metadata_enabled=True,
            image_tests_configuration=imagebuilder.CfnImage.ImageTestsConfigurationProperty(
                image_tests_enabled=True, timeout_minutes=60),
        )
        # The build needs its subnet's route to the internet and its role's policy in place first.
        image.node.add_dependency(subnet.internet_connectivity_established, role)
        return image.attr_image_id

    def _component_document(self, scripts_url: str) -> str:
        """The AWSTOE document: build with the repository's script, then check what it built."""
        version = self.pin["DMTCP_VERSION"]
        checks = [
            f"{DMTCP_PREFIX}/bin/dmtcp_launch --version | head -n 1 | grep -F '(DMTCP) {version}'",
            f"for tool in dmtcp_coordinator dmtcp_launch dmtcp_command dmtcp_restart; do "
            f"test -x {DMTCP_PREFIX}/bin/$tool; done",
            f"{SPOTRUN_PREFIX}/venv/bin/python -c 'import boto3, botocore, pydantic, yaml'",
            f"test -s {SPOTRUN_PREFIX}/image.json",
        ]
        build = [
            f"dnf install -y -q {' '.join(BUILD_PACKAGES)}",
            f"{PYTHON} -m zipfile -e {BUILD_WORKDIR}/scripts.zip {BUILD_WORKDIR}/scripts",
            f"bash {BUILD_WORKDIR}/scripts/build-worker-image.sh --prefix {SPOTRUN_PREFIX} "
            f"--dmtcp-prefix {DMTCP_PREFIX} --git --python {PYTHON}",
            f"rm -rf {BUILD_WORKDIR}",
        ]

        def bash_step(step: str, commands: list[str]) -> list[str]:
            # AWSTOE runs a step's commands as one bash script: any failing command fails the step.
            lines = [f"      - name: {step}", "        action: ExecuteBash", "        inputs:", "          commands:"]
            return lines + [f"            - {_yaml_string(command)}" for command in ["set -euo pipefail", *commands]]

        lines = [
            "name: spotrun-worker-image",
            f"description: DMTCP {version} from tag {self.pin['DMTCP_TAG']} (commit {self.pin['DMTCP_COMMIT']}) "
            "and the spotrun agent's virtual environment",
            "schemaVersion: 1.0",
            "phases:",
            "  - name: build",
            "    steps:",
            "      - name: Scripts",
            "        action: S3Download",
            "        inputs:",
            "          - source: SCRIPTS_URL",
            f"            destination: {BUILD_WORKDIR}/scripts.zip",
            *bash_step("Build", build),
            "  - name: validate",
            "    steps:",
            *bash_step("CheckBuild", checks),
            "  - name: test",
            "    steps:",
            *bash_step("CheckImage", checks),
        ]
        document = "\n".join(lines) + "\n"
        before, after = document.split("SCRIPTS_URL")
        return Fn.join("", [before, scripts_url, after])


def _yaml_string(text: str) -> str:
    """A YAML double-quoted scalar (commands hold ':', '|' and quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

