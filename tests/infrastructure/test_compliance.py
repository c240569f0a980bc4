"""cdk-nag AwsSolutions and cfn-lint on the synthesized template."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aws_cdk import Acknowledgment
from template_query import REPORT_ONLY, Synthesized

import stacks.constructs.nag as nag
from stacks.spotrun_stack import build_app

pytestmark = pytest.mark.slow  # reads the synthesized stack

PACK = "AwsSolutions"


def _violations(report_file: Path) -> list[tuple[str, str, str]]:
    report = json.loads(report_file.read_text())
    return [
        (violation["severity"], violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        if plugin["pluginName"] == PACK
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def test_cdk_nag_aws_solutions_finds_nothing_unacknowledged(synthesized: Synthesized) -> None:
    # cdk-nag v3 reports through CDK's validation report, not through Annotations.
    assert _violations(synthesized.assembly_dir / "validation-report.json") == []


def test_every_acknowledgment_carries_a_reason_in_the_template(synthesized: Synthesized) -> None:
    acknowledged = [
        rule
        for resource in synthesized.query.resources.values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        if rule["id"].startswith(f"{PACK}-")  # CDK acknowledges some of its own validate rules too
    ]
    assert acknowledged
    for rule in acknowledged:
        assert len(rule["reason"]) >= 40, rule


class _RecordingValidations:
    """Stands in for aws_cdk.Validations: records acknowledgments instead of applying them."""

    recorded: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, scope: Any) -> None:
        self._path = scope.node.path

    @classmethod
    def of(cls, scope: Any) -> _RecordingValidations:
        return cls(scope)

    def acknowledge(self, *rules: Acknowledgment) -> None:
        self.recorded.extend((self._path, rule.id) for rule in rules)


@pytest.fixture(scope="module")
def unacknowledged(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """A second synth with every acknowledgment withheld: what cdk-nag finds on its own."""
    _RecordingValidations.recorded = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nag, "Validations", _RecordingValidations)
        outdir = tmp_path_factory.mktemp("cdk.out.unacknowledged")
        app, _ = build_app(outdir=str(outdir), context=REPORT_ONLY)
        assembly = app.synth()
    return list(_RecordingValidations.recorded), _violations(Path(assembly.directory) / "validation-report.json")


def test_no_acknowledgment_is_stale(unacknowledged: tuple[list[tuple[str, str]], list[tuple[str, str, str]]]) -> None:
    acknowledgments, findings = unacknowledged
    assert acknowledgments
    stale = [
        (path, rule_id)
        for path, rule_id in acknowledgments
        if not any(rule == rule_id and (found == path or found.startswith(path + "/")) for _, rule, found in findings)
    ]
    assert stale == [], "acknowledgments that no longer match a cdk-nag finding"


def _cfn_lint() -> str:
    """The cfn-lint installed next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("cfn-lint")
    found = str(beside) if beside.exists() else shutil.which("cfn-lint")
    if found is None:
        pytest.fail("cfn-lint is not installed")
    return found


def test_cfn_lint_passes_without_errors_or_warnings(synthesized: Synthesized) -> None:
    result = subprocess.run(
        [_cfn_lint(), str(synthesized.template_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
