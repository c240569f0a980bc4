"""The worker image: built once per deployment by the stack's EC2 Image Builder pipeline from the
repository's own build script, DMTCP pinned by release tag and commit (worker/image/dmtcp.pin, read
here, never restated), or the user's own AMI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template
from template_query import StackTemplate, Synthesized, render

from spotrun.resources import WORKER_IMAGE_FAULTS_METRIC, EnvVar
from stacks import REPO_ROOT
from stacks.config import SpotrunConfig
from stacks.constructs import worker_image
from stacks.constructs.worker_image import WorkerImage, read_pin

pytestmark = pytest.mark.slow  # reads the synthesized stack

PIN = read_pin(REPO_ROOT / "worker" / "image" / "dmtcp.pin")
VENDOR_README = REPO_ROOT.parent / "shared" / "vendor" / "README.md"


def _one(query: StackTemplate, resource_type: str) -> tuple[str, dict]:
    [(logical_id, resource)] = query.of_type(resource_type).items()
    return logical_id, resource["Properties"]


def _component(query: StackTemplate) -> dict:
    _, component = _one(query, "AWS::ImageBuilder::Component")
    return yaml.safe_load(render(component["Data"]))


def _commands(document: dict, phase: str) -> list[str]:
    [found] = [p for p in document["phases"] if p["name"] == phase]
    steps = [step["inputs"]["commands"] for step in found["steps"] if step["action"] == "ExecuteBash"]
    assert steps and all(commands[0] == "set -euo pipefail" for commands in steps)  # a failing check fails its step
    return [c for commands in steps for c in commands]


def test_the_pin_names_the_release_tag_and_its_commit() -> None:
    assert PIN["DMTCP_VERSION"] == "4.2.0" and PIN["DMTCP_TAG"] == "v4.2.0"  # there is no tag "4.2.0"
    assert re.fullmatch(r"[0-9a-f]{40}", PIN["DMTCP_COMMIT"])
    if VENDOR_README.is_file():  # the vendored source's README records the tag's commit and the tarball's checksum
        readme = VENDOR_README.read_text()
        assert PIN["DMTCP_COMMIT"] in readme and PIN["DMTCP_VENDOR_SHA256"] in readme


def test_the_image_is_built_by_the_repository_script_from_the_pinned_tag(synthesized: Synthesized) -> None:
    query = synthesized.query
    document = _component(query)
    build = _commands(document, "build")
    [run] = [c for c in build if "build-worker-image.sh" in c]
    assert run.split() == ["bash", "/tmp/spotrun-image/scripts/build-worker-image.sh", "--prefix", "/opt/spotrun",
                           "--dmtcp-prefix", "/opt/dmtcp", "--git", "--python", "python3.11"]
    assert not any("curl" in c or "archive/refs" in c or "github.com" in c for c in build), "no URL of our own"
    # The script and the pin it reads are the repository's, byte for byte, in the asset the component downloads
    [download] = [s for p in document["phases"] for s in p["steps"] if s["action"] == "S3Download"]
    key = download["inputs"][0]["source"].rsplit("/", 1)[1].removesuffix(".zip")
    shipped = synthesized.assembly_dir / f"asset.{key}"
    for name in ("build-worker-image.sh", "install-dmtcp.sh", "dmtcp.pin", "requirements.txt"):
        assert (shipped / name).read_bytes() == (REPO_ROOT / "worker" / "image" / name).read_bytes(), name
    assert read_pin(shipped / "dmtcp.pin")["DMTCP_TAG"] == PIN["DMTCP_TAG"]
    assert read_pin(shipped / "dmtcp.pin")["DMTCP_COMMIT"] == PIN["DMTCP_COMMIT"]
    assert f"from tag {PIN['DMTCP_TAG']} (commit {PIN['DMTCP_COMMIT']})" in document["description"]


@pytest.mark.parametrize("phase", ["validate", "test"])
def test_the_built_image_is_checked_against_the_pin_before_any_worker_boots_it(query: StackTemplate,
                                                                                phase: str) -> None:
    commands = _commands(_component(query), phase)
    assert f"/opt/dmtcp/bin/dmtcp_launch --version | head -n 1 | grep -F '(DMTCP) {PIN['DMTCP_VERSION']}'" in commands
    assert any("venv/bin/python -c 'import boto3, botocore, pydantic, yaml'" in c for c in commands)
    _, image = _one(query, "AWS::ImageBuilder::Image")
    assert image["ImageTestsConfiguration"]["ImageTestsEnabled"] is True  # the test phase runs on the new AMI


def test_the_recipe_builds_on_amazon_linux_2023_and_is_named_after_its_inputs(query: StackTemplate) -> None:
    component_id, component = _one(query, "AWS::ImageBuilder::Component")
    _, recipe = _one(query, "AWS::ImageBuilder::ImageRecipe")
    assert render(recipe["ParentImage"]).endswith(":aws:image/amazon-linux-2023-x86/x.x.x")
    assert recipe["Components"] == [{"ComponentArn": {"Fn::GetAtt": [component_id, "Arn"]}}]
    digest = worker_image.image_inputs_hash()[:12]
    assert render(recipe["Name"]) == render(component["Name"]) == f"${{AWS::StackName}}-worker-{digest}"


def test_the_inputs_hash_follows_every_file_of_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "image"
    shutil.copytree(worker_image.IMAGE_DIR, copy)
    monkeypatch.setattr(worker_image, "IMAGE_DIR", copy)
    before = worker_image.image_inputs_hash()
    (copy / "requirements.txt").write_text((copy / "requirements.txt").read_text() + "numpy==2.4.6\n")
    assert worker_image.image_inputs_hash() != before


def test_the_build_runs_least_privileged_in_the_workers_network(query: StackTemplate) -> None:
    _, infrastructure = _one(query, "AWS::ImageBuilder::InfrastructureConfiguration")
    profile = infrastructure["InstanceProfileName"]["Ref"]
    [role] = query.props(profile)["Roles"]
    managed = {arn.rsplit("/", 1)[1] for arn in query.managed_policies_of_role(role["Ref"])}
    assert managed == {"EC2InstanceProfileForImageBuilder", "AmazonSSMManagedInstanceCore"}
    [statement] = query.statements_of_role(role["Ref"])
    assert statement.actions == ("s3:GetObject",) and len(statement.resources) == 1
    assert statement.resources[0].endswith(".zip") and "*" not in statement.resources[0]  # its scripts only
    [group] = infrastructure["SecurityGroupIds"]
    assert "SecurityGroupIngress" not in query.props(group["Fn::GetAtt"][0])
    assert infrastructure["InstanceMetadataOptions"]["HttpTokens"] == "required"
    assert infrastructure["TerminateInstanceOnFailure"] is True


def test_the_control_plane_knows_the_image_and_may_launch_only_it(query: StackTemplate) -> None:
    image_id, _ = _one(query, "AWS::ImageBuilder::Image")
    reference = {"Fn::GetAtt": [image_id, "ImageId"]}
    scheduler = query.props(query.functions()["scheduler"])
    assert scheduler["Environment"]["Variables"][EnvVar.WORKER_IMAGE_ID] == reference
    images = [r for s in query.function_statements("scheduler") if s.allows("ec2:RunInstances")
              for r in s.resources if ":image/" in r]
    assert images == [f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}::image/${{{image_id}.ImageId}}"]


def test_a_worker_image_fault_raises_an_alarm(query: StackTemplate) -> None:
    [alarm] = [a["Properties"] for a in query.of_type("AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("MetricName") == WORKER_IMAGE_FAULTS_METRIC]
    assert alarm["Namespace"] == "spotrun" and alarm["Dimensions"] == [{"Name": "service", "Value": "spotrun"}]
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] and alarm["TreatMissingData"] == "notBreaching"


def test_a_users_own_ami_replaces_the_pipeline() -> None:
    stack = Stack(App(), "Own")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1, nat_gateways=0,
                  subnet_configuration=[ec2.SubnetConfiguration(name="p", subnet_type=ec2.SubnetType.PUBLIC)])
    group = ec2.SecurityGroup(stack, "Group", vpc=vpc)
    image = WorkerImage(stack, "Image", user_ami="ami-0123456789abcdef0", subnet=vpc.public_subnets[0],
                        security_group=group)
    ec2.LaunchTemplate(stack, "Template", machine_image=image.machine_image)
    template = Template.from_stack(stack).to_json()
    assert not [r for r in template["Resources"].values() if r["Type"].startswith("AWS::ImageBuilder::")]
    [launch] = [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::LaunchTemplate"]
    assert launch["Properties"]["LaunchTemplateData"]["ImageId"] == "ami-0123456789abcdef0"
    assert image.image_id == "ami-0123456789abcdef0" and not image.built


def test_the_worker_ami_setting_is_checked_and_documented() -> None:
    assert SpotrunConfig(worker_ami="ami-0123456789abcdef0").worker_ami == "ami-0123456789abcdef0"
    with pytest.raises(ValueError, match="spotrun:workerAmi: 'ubuntu-22' is not an AMI id"):
        SpotrunConfig(worker_ami="ubuntu-22")
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    assert context["spotrun:workerAmi"] == ""  # empty: build the image at deploy
    assert "spotrun:workerAmi" in (REPO_ROOT / "README.md").read_text()
